"""The platform on a Redis it reaches by a Unix socket, as `make run` reaches the Redis it starts: every service's
reads and writes go through it (the gateway's, the workers', and the consumers' of FastStream)."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from httpx_sse import EventSource

from chatbot_devtools.fakes import FakeOpenAI
from chatbot_devtools.platform import LocalPlatform, api_client
from chatbot_devtools.redis_server import RedisServer

pytestmark = pytest.mark.e2e


@pytest.fixture
def socket_redis(tmp_path: Path) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path / "redis", unix_socket=True).start()
    yield server
    server.stop()


def test_a_turn_streams_is_stored_and_is_logged_over_a_unix_socket(
    platform_factory: Callable[..., LocalPlatform], fake_registry: str, fake_openai: FakeOpenAI, socket_redis: RedisServer
) -> None:
    assert socket_redis.url.startswith("unix://")
    fake_openai.reply = "Over the socket."
    platform = platform_factory(fake_registry, socket_redis.url)
    platform.start_conversation()
    platform.start_log_collector()
    url = platform.start_gateway()
    platform.start_worker()
    platform.wait_ready(url)
    client = api_client(url, platform.admin_key)
    conversation = client.post("/api/v1/conversations", json={}).json()["id"]
    with client.stream(
        "POST", f"/api/v1/conversations/{conversation}/messages", json={"content": "Hello"}, headers={"Accept": "text/event-stream"}
    ) as response:
        assert response.status_code == 200, response.read()
        events = list(EventSource(response).iter_sse())
    assert events[-1].event == "done"
    assert "".join(e.json()["text"] for e in events if e.event == "delta") == "Over the socket."
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        stored = client.get(f"/api/v1/conversations/{conversation}").json()["messages"]
        usage = client.get("/api/v1/usage").json()["totals"]
        if [m["status"] for m in stored] == ["complete", "complete"] and usage["completed"] == 1:
            break
        time.sleep(0.1)
    assert [(m["role"], m["content"]) for m in stored] == [("user", "Hello"), ("assistant", "Over the socket.")]
    assert usage["requests"] == usage["completed"] == 1, "the log collector read the turn's events through the socket"
