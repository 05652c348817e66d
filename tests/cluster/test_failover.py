"""A cluster master killed while fifty answers stream through two gateways: every answer still arrives whole, in the
client's own protocol, is stored once and counted once, and the platform goes on without a restart."""

from __future__ import annotations

import collections
import threading
import time
from collections.abc import Callable
from typing import Any

import anthropic
import httpx
import openai
import pytest
import redis
from httpx_sse import ServerSentEvent

from chatbot_contracts import DATA_FIELD_BYTES, Keys, inference_event_decoder
from chatbot_contracts.events import Ended
from chatbot_contracts.redis import RedisSettings
from chatbot_devtools.fakes import FakeOpenAI
from chatbot_devtools.platform import LocalPlatform
from chatbot_devtools.redis_cluster import RedisClusterNodes

from ..faults.conftest import REPLY, Client, final_text
from .conftest import assert_new_requests_work

pytestmark = pytest.mark.faults
NATIVE, OPENAI, ANTHROPIC = 20, 15, 15


class Streams:
    """Streams of three protocols at once; each says when it has shown text, then runs to its end."""

    def __init__(self, urls: list[str], key: str) -> None:
        self.urls, self.key = urls, key
        self.results: dict[tuple[str, int], Any] = {}
        self.showing = threading.Barrier(NATIVE + OPENAI + ANTHROPIC + 1)

    def native(self, i: int) -> None:
        client = Client(self.urls[i % 2], self.key)
        conversation = client.conversation()
        events: list[ServerSentEvent] = []
        for event in client.open(f"/api/v1/conversations/{conversation}/messages", {"content": f"Question {i}"}):
            events.append(event)
            if event.event == "delta" and sum(e.event == "delta" for e in events) == 1:
                self.showing.wait(timeout=60)
        self.results["native", i] = (client, conversation, events)

    def openai(self, i: int) -> None:
        sdk = openai.OpenAI(base_url=f"{self.urls[i % 2]}/v1", api_key=self.key, max_retries=0, timeout=60)
        text: list[str] = []
        finish = None
        try:
            for chunk in sdk.chat.completions.create(model="fake", messages=[{"role": "user", "content": f"Question {i}"}], stream=True):
                if chunk.choices and chunk.choices[0].delta.content:
                    text.append(chunk.choices[0].delta.content)
                    if len(text) == 1:
                        self.showing.wait(timeout=60)
                if chunk.choices and chunk.choices[0].finish_reason:
                    finish = chunk.choices[0].finish_reason
            self.results["openai", i] = ("".join(text), finish)
        except openai.APIError as exc:
            self.results["openai", i] = (f"{''.join(text)} … then {exc!r}", finish)

    def anthropic(self, i: int) -> None:
        sdk = anthropic.Anthropic(base_url=self.urls[i % 2], api_key=self.key, max_retries=0, timeout=60)
        text: list[str] = []
        try:
            with sdk.messages.stream(model="fake", max_tokens=200, messages=[{"role": "user", "content": f"Question {i}"}]) as stream:
                for piece in stream.text_stream:
                    text.append(piece)
                    if len(text) == 1:
                        self.showing.wait(timeout=60)
                self.results["anthropic", i] = ("".join(text), stream.get_final_message().stop_reason)
        except anthropic.APIError as exc:
            self.results["anthropic", i] = (f"{''.join(text)} … then {exc!r}", None)

    def run(self, fault: Callable[[], None]) -> None:
        jobs = [(self.native, i) for i in range(NATIVE)] + [(self.openai, i) for i in range(OPENAI)]
        jobs += [(self.anthropic, i) for i in range(ANTHROPIC)]
        threads = [threading.Thread(target=job, args=(i,)) for job, i in jobs]
        for thread in threads:
            thread.start()
        self.showing.wait(timeout=60)
        fault()
        for thread in threads:
            thread.join(timeout=120)


def restarts(platform: LocalPlatform) -> list[str]:
    """What the workers logged of generations they left for a takeover or took over: why a stream started again."""
    return [
        line[:600]
        for log in sorted(platform.workdir.glob("worker-*.log"))
        for line in log.read_text(errors="replace").splitlines()
        if "generation.abandoned" in line or "generation.reclaimed" in line
    ]


def ended_in_redis(cluster: RedisClusterNodes, keys: Keys) -> dict[str, list[str]]:
    """Each request's terminal events as the event streams hold them (what the log collector counts from)."""
    ended: dict[str, list[str]] = collections.defaultdict(list)
    client = redis.RedisCluster.from_url(cluster.url)
    try:
        for partition in keys.events_partitions:
            for _, fields in client.xrange(partition):
                event = inference_event_decoder.decode(fields[DATA_FIELD_BYTES])
                if isinstance(event, Ended):
                    ended[event.request_id].append(f"{type(event).__name__} of attempt {event.attempt}")
    finally:
        client.close()
    return dict(ended)


def test_a_master_killed_under_fifty_streams_through_two_gateways_loses_nothing(
    cluster: RedisClusterNodes, platform_factory: Callable[..., LocalPlatform], fake_registry: str, fake_openai: FakeOpenAI
) -> None:
    fake_openai.reply = REPLY
    fake_openai.token_delay_s = 0.15  # about 6 s an answer: the failover (about 4 s) falls in the middle of each
    platform = platform_factory(fake_registry, redis=cluster.url)
    # A read whose reply the failover cut off leaves its events pending, taken over after this long (60 s by default).
    platform.env.update({"CHATBOT_LOG_CLAIM_IDLE_S": "6", "CHATBOT_EVENTS_CLAIM_IDLE_S": "6"})
    platform.start_conversation()
    platform.start_log_collector()
    urls = [platform.start_gateway("gateway-a"), platform.start_gateway("gateway-b")]
    platform.start_worker("worker-a")
    platform.start_worker("worker-b")
    for url in urls:
        platform.wait_ready(url)
    keys = RedisSettings(url=cluster.url, redis_namespace=platform.env["CHATBOT_REDIS_NAMESPACE"]).keys()
    assert keys.partitions == 16, "a cluster is found by asking its node"
    by_master = collections.Counter(cluster.master_of(stream).port for stream in keys.requests_partitions)
    doomed = next(server for server in cluster.servers if server.port == by_master.most_common(1)[0][0])

    streams = Streams(urls, platform.admin_key)
    streams.run(doomed.kill)
    assert len(streams.results) == NATIVE + OPENAI + ANTHROPIC, "every stream ended"

    restarted = 0
    for i in range(NATIVE):
        client, conversation, events = streams.results["native", i]
        assert events[-1].event == "done", f"native stream {i} ended with {events[-1].event}: {events[-1].data}"
        assert final_text(events) == REPLY, f"native stream {i} lost text: {[(e.id, e.event, e.data[:40]) for e in events]}"
        restarted += any(e.event == "restart" for e in events)
        stored = client.stored_answer(conversation, events[0].json()["assistant_message_id"], timeout_s=30)
        assert stored["answer"]["content"] == REPLY
        assert [m["role"] for m in stored["messages"]] == ["user", "assistant"], "exactly one assistant message"
    for i in range(OPENAI):
        assert streams.results["openai", i] == (REPLY, "stop"), f"OpenAI stream {i}; the workers said: {restarts(platform)}"
    for i in range(ANTHROPIC):
        assert streams.results["anthropic", i] == (REPLY, "end_turn"), f"Anthropic stream {i}; the workers said: {restarts(platform)}"
    print(f"{restarted} of {NATIVE} native streams started again; every other answer went on through the failover")

    requests = NATIVE + OPENAI + ANTHROPIC
    usage = httpx.get(f"{urls[0]}/api/v1/usage", headers={"Authorization": f"Bearer {platform.admin_key}"}, timeout=10)
    deadline = time.monotonic() + 30
    while usage.json()["totals"]["requests"] < requests and time.monotonic() < deadline:
        time.sleep(0.2)
        usage = httpx.get(f"{urls[0]}/api/v1/usage", headers={"Authorization": f"Bearer {platform.admin_key}"}, timeout=10)
    time.sleep(1)  # a second count of any of them would arrive by now
    totals = httpx.get(f"{urls[1]}/api/v1/usage", headers={"Authorization": f"Bearer {platform.admin_key}"}, timeout=10).json()["totals"]
    in_redis = ended_in_redis(cluster, keys)
    assert (totals["requests"], totals["completed"]) == (requests, requests), (
        f"each request counted once: {totals}; Redis's event streams end {len(in_redis)} requests: {in_redis}"
    )
    assert totals["output_tokens"] == requests * fake_openai.count(REPLY)

    assert_new_requests_work(urls[1], platform.admin_key, fake_openai, 8)
