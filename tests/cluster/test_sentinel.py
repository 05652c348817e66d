"""Redis Sentinel: the master killed while answers stream, its replica promoted by the Sentinels; every answer
arrives whole and is stored once, and the platform goes on without a restart."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from chatbot_devtools.fakes import FakeOpenAI
from chatbot_devtools.platform import LocalPlatform
from chatbot_devtools.redis_sentinel import SentinelSetup

from ..faults.conftest import REPLY, Client
from .conftest import assert_new_requests_work, assert_whole_and_stored_once, start_with_two_workers, turns_through

pytestmark = pytest.mark.faults


@pytest.fixture
def sentinels(tmp_path: Path) -> Iterator[SentinelSetup]:
    setup = SentinelSetup(tmp_path / "sentinel").start()
    yield setup
    setup.stop()


def test_a_master_killed_under_sentinel_loses_no_answer(
    sentinels: SentinelSetup, platform_factory: Callable[..., LocalPlatform], fake_registry: str, fake_openai: FakeOpenAI
) -> None:
    fake_openai.reply = REPLY
    fake_openai.token_delay_s = 0.1
    platform = platform_factory(fake_registry, redis=sentinels.master.url)
    # The services ask the Sentinels for the master (REDIS_URL names none they could reach).
    url = start_with_two_workers(platform, CHATBOT_REDIS_SENTINELS=sentinels.addresses, REDIS_URL="redis://unused.invalid:6379/0")

    def fail_over() -> None:
        sentinels.master.kill()
        sentinels.wait_for(lambda: sentinels.master_port() == sentinels.replica.port, 30, "the Sentinels did not promote the replica")

    client = Client(url, platform.admin_key)
    assert_whole_and_stored_once(client, turns_through(client, 6, fail_over))
    assert_new_requests_work(url, platform.admin_key, fake_openai, 4)
