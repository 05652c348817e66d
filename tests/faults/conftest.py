from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
from httpx_sse import EventSource, ServerSentEvent

from chatbot_devtools.fakes import FakeOpenAI
from chatbot_devtools.platform import LocalPlatform

REPLY = " ".join(f"word{i}" for i in range(40)) + "."


class Client:
    """A native-API client of one gateway."""

    def __init__(self, url: str, key: str) -> None:
        self.http = httpx.Client(base_url=url, headers={"Authorization": f"Bearer {key}"}, timeout=httpx.Timeout(60, connect=5))

    def conversation(self) -> str:
        return str(self.http.post("/api/v1/conversations", json={}).json()["id"])

    def open(
        self, path: str, body: dict[str, Any] | None = None, method: str = "POST", headers: dict[str, str] | None = None
    ) -> Iterator[ServerSentEvent]:
        """The events of a stream, as they arrive."""
        with self.http.stream(method, path, json=body, headers={"Accept": "text/event-stream", **(headers or {})}) as response:
            assert response.status_code == 200, response.read()
            yield from EventSource(response).iter_sse()

    def stored_answer(self, conversation_id: str, message_id: str, timeout_s: float = 15) -> dict[str, Any]:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            response = self.http.get(f"/api/v1/conversations/{conversation_id}")
            assert response.status_code == 200, f"GET conversation {conversation_id}: {response.status_code} {response.text[:500]}"
            messages = response.json()["messages"]
            answer = next((m for m in messages if m["id"] == message_id), None)
            if answer and answer["status"] != "streaming":
                return {"answer": answer, "messages": messages}
            time.sleep(0.1)
        raise AssertionError(f"answer {message_id} was never stored")


def final_text(events: list[ServerSentEvent]) -> str:
    """The answer as a client shows it: text after the last `restart` is what counts."""
    text: list[str] = []
    for event in events:
        if event.event == "restart":
            text.clear()
        elif event.event == "delta":
            text.append(event.json()["text"])
    return "".join(text)


@pytest.fixture
def slow_upstream(fake_openai: FakeOpenAI) -> FakeOpenAI:
    fake_openai.reply = REPLY
    fake_openai.token_delay_s = 0.05
    return fake_openai


@pytest.fixture
def platform(platform_factory: Callable[..., LocalPlatform], fake_registry: str, slow_upstream: FakeOpenAI) -> LocalPlatform:
    platform = platform_factory(fake_registry)
    platform.env["CHATBOT_CLAIM_IDLE_S"] = "2"
    platform.start_conversation()
    return platform
