"""A cluster master killed while answers stream: every answer still arrives whole and is stored once, and the
platform goes on without a restart."""

from __future__ import annotations

import collections
from collections.abc import Callable

import pytest

from chatbot_contracts.redis import RedisSettings
from chatbot_devtools.fakes import FakeOpenAI
from chatbot_devtools.platform import LocalPlatform
from chatbot_devtools.redis_cluster import RedisClusterNodes

from ..faults.conftest import REPLY, Client
from .conftest import assert_new_requests_work, assert_whole_and_stored_once, start_with_two_workers, turns_through

pytestmark = pytest.mark.faults


def test_a_master_killed_mid_stream_loses_no_answer(
    cluster: RedisClusterNodes, platform_factory: Callable[..., LocalPlatform], fake_registry: str, fake_openai: FakeOpenAI
) -> None:
    fake_openai.reply = REPLY
    fake_openai.token_delay_s = 0.1
    platform = platform_factory(fake_registry, redis=cluster.url)
    url = start_with_two_workers(platform)
    keys = RedisSettings(url=cluster.url, redis_namespace=platform.env["CHATBOT_REDIS_NAMESPACE"]).keys()
    assert keys.partitions == 16, "a cluster is found by asking its node"
    by_master = collections.Counter(cluster.master_of(stream).port for stream in keys.requests_partitions)
    doomed = next(server for server in cluster.servers if server.port == by_master.most_common(1)[0][0])

    client = Client(url, platform.admin_key)
    assert_whole_and_stored_once(client, turns_through(client, 12, doomed.kill))
    assert_new_requests_work(url, platform.admin_key, fake_openai, 8)
