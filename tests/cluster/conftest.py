from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import openai
import pytest
from httpx_sse import ServerSentEvent

from chatbot_devtools.fakes import FakeOpenAI
from chatbot_devtools.platform import LocalPlatform
from chatbot_devtools.redis_cluster import RedisClusterNodes

from ..faults.conftest import REPLY, Client, final_text


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[RedisClusterNodes]:
    """A Redis Cluster of this test's own (six nodes, a 2 s node timeout), for tests that kill its masters."""
    nodes = RedisClusterNodes(tmp_path / "cluster").start()
    yield nodes
    nodes.stop()


def start_with_two_workers(platform: LocalPlatform, **env: str) -> str:
    """The conversation service, a gateway and two workers on `platform` (with `env`); the gateway's URL once ready.

    Takeovers wait 6 s: longer than a failover here (about 4 s: a 2 s node timeout or down-after time, then the
    election), as `CHATBOT_CLAIM_IDLE_S` should be anywhere."""
    platform.env.update({"CHATBOT_CLAIM_IDLE_S": "6", **env})
    platform.start_conversation()
    url = platform.start_gateway()
    platform.start_worker("worker-a")
    platform.start_worker("worker-b")
    platform.wait_ready(url)
    return url


def turns_through(client: Client, count: int, fault: Callable[[], None]) -> list[tuple[str, list[ServerSentEvent]]]:
    """`count` native turns at once, each in a conversation of its own; `fault` runs once every one has shown text.
    Returns each turn's conversation and events."""
    results: dict[int, tuple[str, list[ServerSentEvent]]] = {}
    streaming = threading.Barrier(count + 1)

    def converse(i: int) -> None:
        conversation = client.conversation()
        events: list[ServerSentEvent] = []
        for event in client.open(f"/api/v1/conversations/{conversation}/messages", {"content": f"Question {i}"}):
            events.append(event)
            if event.event == "delta" and sum(e.event == "delta" for e in events) == 1:
                streaming.wait(timeout=30)
        results[i] = (conversation, events)

    threads = [threading.Thread(target=converse, args=(i,)) for i in range(count)]
    for thread in threads:
        thread.start()
    streaming.wait(timeout=30)
    fault()
    for thread in threads:
        thread.join(timeout=120)
    assert len(results) == count, "every stream ended"
    return [results[i] for i in range(count)]


def assert_whole_and_stored_once(client: Client, turns: list[tuple[str, list[ServerSentEvent]]]) -> None:
    for i, (conversation, events) in enumerate(turns):
        assert events[-1].event == "done", f"stream {i} ended with {events[-1].event}: {events[-1].data}"
        assert final_text(events) == REPLY, f"stream {i} lost text: {[(e.id, e.event, e.data[:40]) for e in events]}"
        stored = client.stored_answer(conversation, events[0].json()["assistant_message_id"], timeout_s=30)
        assert stored["answer"]["content"] == REPLY
        assert [m["role"] for m in stored["messages"]] == ["user", "assistant"], "exactly one assistant message"


def assert_new_requests_work(url: str, key: str, fake: FakeOpenAI, count: int) -> None:
    """No process was restarted: the clients found the promoted replica by themselves."""
    sdk = openai.OpenAI(base_url=f"{url}/v1", api_key=key, max_retries=0, timeout=60)
    fake.token_delay_s = 0.0
    for _ in range(count):
        completion = sdk.chat.completions.create(model="fake", messages=[{"role": "user", "content": "After the failover"}])
        assert completion.choices[0].message.content == REPLY
