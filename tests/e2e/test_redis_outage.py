"""Redis going away: the gateway says so at once (503, never a hang) and everything recovers when it returns."""

from __future__ import annotations

import time
from collections.abc import Callable

import httpx
import pytest

from chatbot_devtools.fakes import FakeOpenAI
from chatbot_devtools.platform import LocalPlatform
from chatbot_devtools.redis_server import RedisServer

pytestmark = pytest.mark.e2e

CHAT = {"model": "fake", "messages": [{"role": "user", "content": "Are you there?"}]}


def test_an_outage_is_503_and_chat_recovers_when_redis_returns(
    own_redis: RedisServer, platform_factory: Callable[..., LocalPlatform], fake_registry: str, fake_openai: FakeOpenAI
) -> None:
    platform = platform_factory(fake_registry, redis=own_redis.url)
    url = platform.start_gateway()
    platform.start_worker()
    platform.wait_ready(url)
    auth = {"Authorization": f"Bearer {platform.admin_key}"}
    with httpx.Client(base_url=url, headers=auth, timeout=10) as client:
        assert client.post("/v1/chat/completions", json=CHAT).status_code == 200

        own_redis.kill()
        started = time.monotonic()
        ready = client.get("/readyz")
        chat = client.post("/v1/chat/completions", json=CHAT)
        assert ready.status_code == 503 and ready.json()["redis"] == "down"
        assert chat.status_code == 503 and chat.json()["error"]["code"] == "redis_unavailable"
        assert time.monotonic() - started < 2.0, "an outage must be reported at once"

        own_redis.start()
        recovered_at = None
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            response = client.post("/v1/chat/completions", json=CHAT)
            if response.status_code == 200:
                recovered_at = time.monotonic()
                break
            time.sleep(0.2)
        assert recovered_at is not None, f"chat did not recover: {response.status_code} {response.text}"
        assert response.json()["choices"][0]["message"]["content"] == "You said: Are you there?"
        assert all(process.alive() for process in platform.processes), "no service may die of an outage"
