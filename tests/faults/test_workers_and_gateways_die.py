"""Killing processes mid-answer: the answer still arrives, whole, once."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest
from httpx_sse import ServerSentEvent

from chatbot_devtools.fakes import FakeOpenAI
from chatbot_devtools.platform import LocalPlatform

from .conftest import REPLY, Client, final_text

pytestmark = pytest.mark.faults


def test_a_worker_killed_mid_answer_is_replaced_and_the_answer_completes(platform: LocalPlatform, slow_upstream: FakeOpenAI) -> None:
    url = platform.start_gateway()
    doomed = platform.start_worker("worker-a")
    platform.wait_ready(url)
    client = Client(url, platform.admin_key)
    conversation = client.conversation()
    events: list[ServerSentEvent] = []
    for event in client.open(f"/api/v1/conversations/{conversation}/messages", {"content": "Survive this"}):
        events.append(event)
        if event.event == "delta" and sum(e.event == "delta" for e in events) == 5:
            platform.start_worker("worker-b")
            doomed.kill()
            killed_at = time.monotonic()
    kinds = [e.event for e in events]
    assert "restart" in kinds and kinds[-1] == "done" and events[-1].json()["reason"] == "stop"
    assert events[kinds.index("restart")].json()["attempt"] == 2
    assert time.monotonic() - killed_at < 20
    assert final_text(events) == REPLY
    stored = client.stored_answer(conversation, events[0].json()["assistant_message_id"])
    assert stored["answer"]["content"] == REPLY and stored["answer"]["status"] == "complete"
    assert [m["role"] for m in stored["messages"]] == ["user", "assistant"], "exactly one assistant message"


def test_a_gateway_killed_mid_stream_is_resumed_on_another_byte_for_byte(platform: LocalPlatform) -> None:
    first = platform.start_gateway("gateway-1")
    second = platform.start_gateway("gateway-2")
    platform.start_worker()
    platform.wait_ready(first)
    before: list[ServerSentEvent] = []
    client = Client(first, platform.admin_key)
    conversation = client.conversation()
    try:
        for event in client.open(f"/api/v1/conversations/{conversation}/messages", {"content": "Do not lose me"}):
            before.append(event)
            if event.event == "delta" and sum(e.event == "delta" for e in before) == 4:
                platform.processes[1].kill()  # gateway-1, the one streaming to us
    except Exception:  # the connection breaks with the gateway
        pass
    assert before[-1].event != "done", "the stream was cut"
    rest = list(
        Client(second, platform.admin_key).open(
            f"/api/v1/requests/{before[0].json()['request_id']}/events", method="GET", headers={"Last-Event-ID": before[-1].id}
        )
    )
    assert rest[-1].event == "done"
    assert [e.id for e in before + rest] == sorted({e.id for e in before + rest}, key=lambda i: tuple(map(int, i.split("-")))), (
        "no gap, no duplicate"
    )
    assert final_text(before + rest) == REPLY


def test_sigterm_lets_a_worker_finish_its_answer(platform: LocalPlatform) -> None:
    url = platform.start_gateway()
    worker = platform.start_worker(CHATBOT_SHUTDOWN_GRACE_S="20")
    platform.wait_ready(url)
    client = Client(url, platform.admin_key)
    conversation = client.conversation()
    events: list[ServerSentEvent] = []
    for event in client.open(f"/api/v1/conversations/{conversation}/messages", {"content": "Finish first"}):
        events.append(event)
        if event.event == "delta" and sum(e.event == "delta" for e in events) == 3:
            worker.signal(signal.SIGTERM)
    assert "restart" not in [e.event for e in events] and final_text(events) == REPLY
    worker.process.wait(timeout=20)  # type: ignore[union-attr]
    assert worker.process.returncode == 0  # type: ignore[union-attr]


def test_a_worker_out_of_grace_leaves_its_answer_to_another(platform: LocalPlatform) -> None:
    url = platform.start_gateway()
    leaving = platform.start_worker("worker-a", CHATBOT_SHUTDOWN_GRACE_S="0.5")
    platform.wait_ready(url)
    client = Client(url, platform.admin_key)
    conversation = client.conversation()
    events: list[ServerSentEvent] = []
    for event in client.open(f"/api/v1/conversations/{conversation}/messages", {"content": "Hand me over"}):
        events.append(event)
        if event.event == "delta" and sum(e.event == "delta" for e in events) == 3:
            platform.start_worker("worker-b")
            leaving.signal(signal.SIGTERM)
    assert "restart" in [e.event for e in events] and final_text(events) == REPLY
    assert leaving.process.wait(timeout=10) == 0  # type: ignore[union-attr]


def test_sigterm_on_a_gateway_lets_streams_run_out_their_grace_then_clients_resume_elsewhere(
    platform: LocalPlatform, slow_upstream: FakeOpenAI
) -> None:
    slow_upstream.token_delay_s = 0.1  # about 4 s of answer
    platform.env["CHATBOT_SHUTDOWN_GRACE_S"] = "1"
    leaving = platform.start_gateway("gateway-1")
    staying = platform.start_gateway("gateway-2")
    platform.start_worker()
    platform.wait_ready(leaving)
    client = Client(leaving, platform.admin_key)
    conversation = client.conversation()
    before: list[ServerSentEvent] = []
    try:
        for event in client.open(f"/api/v1/conversations/{conversation}/messages", {"content": "Outlive the gateway"}):
            before.append(event)
            if event.event == "delta" and sum(e.event == "delta" for e in before) == 2:
                platform.processes[1].signal(signal.SIGTERM)
                signalled = time.monotonic()
    except Exception:  # the gateway closes the stream when its grace runs out
        pass
    cut_after = time.monotonic() - signalled
    assert before[-1].event != "done" and 0.8 < cut_after < 5, f"the stream ran {cut_after:.1f}s after SIGTERM"
    # uvicorn re-raises the signal once it has shut down gracefully, so the status says SIGTERM.
    assert platform.processes[1].process.wait(timeout=10) in (0, -signal.SIGTERM)  # type: ignore[union-attr]
    rest = list(
        Client(staying, platform.admin_key).open(
            f"/api/v1/requests/{before[0].json()['request_id']}/events", method="GET", headers={"Last-Event-ID": before[-1].id}
        )
    )
    assert final_text(before + rest) == REPLY


def test_a_request_that_kills_every_worker_goes_to_the_dead_letters(platform: LocalPlatform, redis_url: str, namespace: str) -> None:
    from chatbot_contracts import Keys
    from chatbot_devtools.redis_cluster import sync_client

    platform.env["CHATBOT_MAX_ATTEMPTS"] = "1"
    url = platform.start_gateway()
    doomed = platform.start_worker("worker-a")
    platform.wait_ready(url)
    client = Client(url, platform.admin_key)
    conversation = client.conversation()
    events: list[ServerSentEvent] = []
    for event in client.open(f"/api/v1/conversations/{conversation}/messages", {"content": "Poison"}):
        events.append(event)
        if event.event == "delta" and sum(e.event == "delta" for e in events) == 2:
            platform.start_worker("worker-b")
            doomed.kill()
    assert events[-1].json()["reason"] == "error"
    assert events[-2].event == "error" and "failed on 1 attempts" in events[-2].json()["message"]
    dead = sync_client(redis_url).xrange(Keys(namespace).dead_letters)
    assert len(dead) == 1 and events[0].json()["request_id"].encode() in dead[0][1][b"__data__"]
    assert client.stored_answer(conversation, events[0].json()["assistant_message_id"])["answer"]["status"] == "failed"


def test_an_expired_stream_answers_410(platform: LocalPlatform, redis_url: str, namespace: str) -> None:
    from chatbot_contracts.redis import RedisSettings
    from chatbot_devtools.redis_cluster import sync_client

    url = platform.start_gateway()
    platform.start_worker()
    platform.wait_ready(url)
    client = Client(url, platform.admin_key)
    events = list(client.open(f"/api/v1/conversations/{client.conversation()}/messages", {"content": "Soon gone"}))
    request_id = events[0].json()["request_id"]
    keys = RedisSettings(url=redis_url, redis_namespace=namespace).keys()
    sync_client(redis_url).delete(keys.request_stream(request_id))  # as its TTL would
    gone = client.http.get(f"/api/v1/requests/{request_id}/events")
    assert gone.status_code == 410 and "have expired" in gone.json()["error"]["message"]


def test_make_run_restarts_a_process_that_dies(tmp_path: Path, redis_url: str, namespace: str) -> None:
    from chatbot_devtools.processes import ServiceProcess
    from chatbot_devtools.redis_server import free_port
    from chatbot_devtools.run import Supervisor

    env = {**os.environ, "REDIS_URL": redis_url, "CHATBOT_REDIS_NAMESPACE": namespace, "CHATBOT_LOG_COLLECTOR_PORT": str(free_port())}
    collector = ServiceProcess("log-collector", "log-collector", env, log_path=tmp_path / "collector.log")
    supervisor = Supervisor([collector])
    supervisor.start()
    try:
        first = collector.pid
        collector.kill()
        deadline = time.monotonic() + 10
        while not (collector.alive() and collector.pid != first) and time.monotonic() < deadline:
            supervisor.watch_once()
            time.sleep(0.1)
        assert collector.alive() and collector.pid != first and collector.restarts == 1
    finally:
        supervisor.stop()
    assert not collector.alive()
