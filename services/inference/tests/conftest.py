from __future__ import annotations

from collections.abc import AsyncIterator, Callable

import aiohttp
import pytest

from chatbot_contracts import ChatMessage, ChatRequest, GenerationParams, ModelSpec
from chatbot_devtools.fakes import FakeOpenAI
from chatbot_inference.providers.http import client_session


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    """The provider calls' session, as a worker makes it."""
    async with client_session(connect_timeout_s=5.0) as session:
        yield session


@pytest.fixture
def spec_for() -> Callable[..., ModelSpec]:
    """A registry entry served by a fake upstream."""
    return _spec_for


@pytest.fixture
def new_request() -> Callable[..., ChatRequest]:
    """A fresh `ChatRequest` (its own id) with a 30 s deadline."""
    return _chat_request


def _spec_for(fake: FakeOpenAI, **overrides: object) -> ModelSpec:
    fields: dict[str, object] = {
        "provider": "openai",
        "upstream_model": "fake-model",
        "base_url": fake.base_url,
        "input_usd_per_mtok": 1.0,
        "output_usd_per_mtok": 2.0,
    }
    fields.update(overrides)
    return ModelSpec(**fields)  # type: ignore[arg-type]


def _chat_request(model: str = "fast", content: str = "Hello there", **overrides: object) -> ChatRequest:
    import time
    import uuid

    now = time.time()
    fields: dict[str, object] = {
        "request_id": uuid.uuid4().hex,
        "model": model,
        "messages": [ChatMessage(role="user", content=content)],
        "params": GenerationParams(max_tokens=100),
        "owner": "owner-1",
        "key_id": "key-1",
        "enqueued_at": now,
        "deadline": now + 30,
    }
    fields.update(overrides)
    if isinstance(fields["params"], dict):
        fields["params"] = GenerationParams(**fields["params"])
    return ChatRequest(**fields)  # type: ignore[arg-type]
