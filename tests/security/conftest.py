"""The platform as a hostile tenant meets it: real gateway, services, worker and Redis; a fake provider."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from chatbot_devtools.fakes import FakeOpenAI
from chatbot_devtools.platform import LocalPlatform, registry_toml


@dataclass
class Stack:
    platform: LocalPlatform
    gateway: str
    conversation: str
    log_collector: str
    fake: FakeOpenAI

    def client(self, key: str | None = None, **headers: str) -> httpx.Client:
        auth = {"Authorization": f"Bearer {key}"} if key else {}
        return httpx.Client(base_url=self.gateway, headers={**auth, **headers}, timeout=30)

    @property
    def admin(self) -> httpx.Client:
        return self.client(self.platform.admin_key)

    def key(self, owner: str, **fields: Any) -> str:
        created = self.admin.post("/api/v1/admin/keys", json={"owner": owner, **fields})
        assert created.status_code == 201, created.text
        return str(created.json()["key"])


@pytest.fixture
def start_stack(platform_factory: Callable[..., LocalPlatform], fake_openai: FakeOpenAI) -> Callable[..., Stack]:
    """Start the whole platform with extra settings; the alias `fake` costs $1,000 per million tokens each way."""

    def start(**env: str) -> Stack:
        registry = registry_toml(
            {
                "fake": {
                    "provider": "openai",
                    "upstream_model": "fake-model",
                    "base_url": fake_openai.base_url,
                    "max_output_tokens": 64,
                    "input_usd_per_mtok": 1000.0,
                    "output_usd_per_mtok": 1000.0,
                }
            }
        )
        platform = platform_factory(registry)
        platform.env.update(env)
        conversation = platform.start_conversation()
        log_collector = platform.start_log_collector()
        gateway = platform.start_gateway()
        platform.start_worker(CHATBOT_WORKER_CONCURRENCY="64")
        platform.wait_ready(gateway)
        return Stack(platform, gateway, conversation, log_collector, fake_openai)

    return start
