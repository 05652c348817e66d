"""Slots moved to another master while answers stream (`redis-cli --cluster reshard`'s steps): every answer arrives
whole and is stored once, and nothing waits for a restart."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from chatbot_contracts.redis import RedisSettings
from chatbot_devtools.fakes import FakeOpenAI
from chatbot_devtools.platform import LocalPlatform
from chatbot_devtools.redis_cluster import RedisClusterNodes

from ..faults.conftest import REPLY, Client
from .conftest import assert_new_requests_work, assert_whole_and_stored_once, start_with_two_workers, turns_through

pytestmark = pytest.mark.faults


def test_partitions_moved_to_another_master_mid_stream_lose_nothing(
    cluster: RedisClusterNodes, platform_factory: Callable[..., LocalPlatform], fake_registry: str, fake_openai: FakeOpenAI
) -> None:
    fake_openai.reply = REPLY
    fake_openai.token_delay_s = 0.1
    platform = platform_factory(fake_registry, redis=cluster.url)
    url = start_with_two_workers(platform)
    keys = RedisSettings(url=cluster.url, redis_namespace=platform.env["CHATBOT_REDIS_NAMESPACE"]).keys()
    source = cluster.master_of(keys.requests_partitions[0])
    target = next(server for server in cluster.masters() if server.port != source.port)
    moving = [stream for stream in keys.requests_partitions if cluster.master_of(stream).port == source.port]
    moved: list[int] = []

    def reshard() -> None:
        # Each partition is one slot: its queue, its events, and every key of its requests (streams, owners, ...).
        moved.extend(cluster.move_slot(stream, target) for stream in moving)

    client = Client(url, platform.admin_key)
    turns = turns_through(client, 16, reshard)
    assert sum(moved) > len(moving), "the moved slots held the requests' keys, not only the queues"
    assert all(cluster.master_of(stream).port == target.port for stream in moving)
    assert_whole_and_stored_once(client, turns)
    assert not any(e.event == "restart" for _, events in turns for e in events), "a moved slot is followed, not failed over"
    assert_new_requests_work(url, platform.admin_key, fake_openai, 8)
