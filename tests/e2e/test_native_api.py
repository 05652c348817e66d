"""The native API end to end: stored conversations, turns streamed as native events, resume, branches, sharing."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from httpx_sse import ServerSentEvent, connect_sse

from chatbot_devtools.fakes import FakeOpenAI
from chatbot_devtools.platform import LocalPlatform

pytestmark = pytest.mark.e2e

REPLY = "Stored, branched, searched and shared. "


@pytest.fixture
def api(platform_factory: Callable[..., LocalPlatform], fake_registry: str, fake_openai: FakeOpenAI) -> httpx.Client:
    fake_openai.reply = REPLY
    fake_openai.token_delay_s = 0.01
    platform = platform_factory(fake_registry)
    platform.start_conversation()
    url = platform.start_gateway()
    platform.start_worker()
    platform.wait_ready(url)
    return httpx.Client(base_url=url, headers={"Authorization": f"Bearer {platform.admin_key}"}, timeout=30)


def stream(
    api: httpx.Client, path: str, body: dict[str, Any] | None = None, method: str = "POST", headers: dict[str, str] | None = None
) -> list[ServerSentEvent]:
    with connect_sse(api, method, path, json=body, headers=headers or {}) as source:
        assert source.response.status_code == 200, source.response.read()
        return list(source.iter_sse())


def text_of(events: list[ServerSentEvent]) -> str:
    return "".join(e.json()["text"] for e in events if e.event == "delta")


def settled(api: httpx.Client, conversation_id: str, message_id: str) -> dict[str, Any]:
    """The conversation once the answer `message_id` is stored (the conversation service applies events asynchronously)."""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        conversation = api.get(f"/api/v1/conversations/{conversation_id}").json()
        if any(m["id"] == message_id and m["status"] != "streaming" for m in conversation["messages"]):
            return conversation  # type: ignore[no-any-return]
        time.sleep(0.05)
    raise AssertionError(f"message {message_id} was never stored")


def test_a_turn_streams_native_events_and_is_stored(api: httpx.Client) -> None:
    conversation = api.post("/api/v1/conversations", json={"system_prompt": "Be brief.", "tags": ["demo"]}).json()
    events = stream(api, f"/api/v1/conversations/{conversation['id']}/messages", {"content": "What does this platform do?"})
    kinds = [e.event for e in events]
    assert kinds[:3] == ["start", "queued", "started"] and kinds[-2:] == ["usage", "done"]
    assert set(kinds[3:-2]) == {"delta"}
    start = events[0].json()
    assert start["request_id"] and start["user_message_id"] and start["assistant_message_id"]
    assert events[2].json()["model"] == "fake" and events[2].json()["provider"] == "openai"
    assert events[-1].json()["reason"] == "stop" and events[-2].json()["output_tokens"] > 0
    ids = [e.id for e in events]
    assert all(ids) and ids == sorted(ids, key=lambda i: tuple(map(int, i.split("-")))), "every event's id is its stream entry id"
    assert text_of(events) == REPLY

    stored = settled(api, conversation["id"], start["assistant_message_id"])
    answer = next(m for m in stored["messages"] if m["id"] == start["assistant_message_id"])
    assert (answer["content"], answer["status"], answer["model"]) == (REPLY, "complete", "fake")
    assert answer["usage"]["output_tokens"] > 0
    assert stored["active_path"] == [start["user_message_id"], start["assistant_message_id"]]
    assert stored["title"] == "What does this platform do?"


def test_resuming_after_any_event_replays_exactly_the_rest(api: httpx.Client) -> None:
    conversation = api.post("/api/v1/conversations", json={}).json()
    events = stream(api, f"/api/v1/conversations/{conversation['id']}/messages", {"content": "Resume me"})
    request_id = events[0].json()["request_id"]
    for cut in range(len(events) - 1):
        by_header = stream(api, f"/api/v1/requests/{request_id}/events", method="GET", headers={"Last-Event-ID": events[cut].id})
        assert [(e.id, e.event, e.data) for e in by_header] == [(e.id, e.event, e.data) for e in events[cut + 1 :]]
    by_query = stream(api, f"/api/v1/requests/{request_id}/events?last_event_id={events[3].id}", method="GET")
    assert text_of(events[:4]) + text_of(by_query) == REPLY, "no gap and no duplicate"
    assert api.get(f"/api/v1/requests/{'0' * 32}/events").status_code == 404
    bad = api.get(f"/api/v1/requests/{request_id}/events", headers={"Last-Event-ID": "yesterday"})
    assert bad.status_code == 400 and "Last-Event-ID 'yesterday'" in bad.json()["error"]["message"]


def test_edit_regenerate_switch_search_share_and_export(api: httpx.Client, fake_openai: FakeOpenAI) -> None:
    conversation_id = api.post("/api/v1/conversations", json={"title": "Branches"}).json()["id"]
    first = stream(api, f"/api/v1/conversations/{conversation_id}/messages", {"content": "Tell me about tardigrades"})[0].json()
    settled(api, conversation_id, first["assistant_message_id"])
    fake_openai.reply = "A different answer. "
    regenerated = stream(api, f"/api/v1/conversations/{conversation_id}/messages/{first['assistant_message_id']}/regenerate", {})
    again = regenerated[0].json()
    assert again["user_message_id"] == first["user_message_id"] and text_of(regenerated) == "A different answer. "
    edited = stream(api, f"/api/v1/conversations/{conversation_id}/messages", {"content": "Tell me about water bears", "parent_id": None})[
        0
    ].json()
    tree = settled(api, conversation_id, again["assistant_message_id"])
    tree = settled(api, conversation_id, edited["assistant_message_id"])
    answers = {m["id"]: m for m in tree["messages"]}
    assert answers[again["assistant_message_id"]]["siblings"] == [first["assistant_message_id"], again["assistant_message_id"]]
    assert answers[again["assistant_message_id"]]["position"] == 2

    switched = api.put(f"/api/v1/conversations/{conversation_id}/active-leaf", json={"message_id": first["assistant_message_id"]})
    assert switched.status_code == 200 and switched.json()["active_path"] == [first["user_message_id"], first["assistant_message_id"]]

    hits = api.get("/api/v1/search", params={"q": "tardigrades"}).json()["hits"]
    assert [h["message_id"] for h in hits] == [first["user_message_id"]]
    assert hits[0]["snippet"][hits[0]["highlights"][0][0] : hits[0]["highlights"][0][1]] == "tardigrades"

    share = api.post(f"/api/v1/conversations/{conversation_id}/share").json()
    public = httpx.get(f"{api.base_url}/api/v1/shared/{share['token']}")
    assert public.status_code == 200, "a shared conversation needs no key"
    assert [m["content"] for m in public.json()["messages"]] == ["Tell me about tardigrades", REPLY]
    markdown = api.get(f"/api/v1/conversations/{conversation_id}/export", params={"format": "markdown"})
    assert markdown.headers["content-type"].startswith("text/markdown") and "Tell me about tardigrades" in markdown.text


def test_bad_native_requests_get_clear_errors(api: httpx.Client) -> None:
    missing = api.post("/api/v1/conversations/nope/messages", json={"content": "hi"})
    assert missing.status_code == 404 and "no conversation nope" in missing.json()["error"]["message"]
    conversation_id = api.post("/api/v1/conversations", json={}).json()["id"]
    empty = api.post(f"/api/v1/conversations/{conversation_id}/messages", json={"content": ""})
    assert empty.status_code == 400 and "`$.content`" in empty.json()["error"]["message"]
    unknown_model = api.post(f"/api/v1/conversations/{conversation_id}/messages", json={"content": "hi", "model": "gpt-9"})
    assert unknown_model.status_code == 404 and unknown_model.json()["error"]["code"] == "model_not_found"
    bad_parent = api.post(f"/api/v1/conversations/{conversation_id}/messages", json={"content": "hi", "parent_id": "ghost"})
    assert bad_parent.status_code == 422 and "parent_id ghost" in bad_parent.json()["error"]["message"]
    bad_patch = api.patch(f"/api/v1/conversations/{conversation_id}", json={"pinned": "yes"})
    assert bad_patch.status_code == 400 and "`$.pinned`" in bad_patch.json()["error"]["message"]
    assert api.get(f"/api/v1/conversations/{conversation_id}").json()["messages"] == [], "refused turns wrote nothing"
    assert httpx.get(f"{api.base_url}/api/v1/conversations").status_code == 401


def test_without_the_conversation_service_native_chat_says_so_and_openai_chat_works(
    platform_factory: Callable[..., LocalPlatform], fake_registry: str, fake_openai: FakeOpenAI
) -> None:
    platform = platform_factory(fake_registry)
    url = platform.start_gateway()  # CHATBOT_CONVERSATION_URL points at nothing
    platform.start_worker()
    platform.wait_ready(url)
    api = httpx.Client(base_url=url, headers={"Authorization": f"Bearer {platform.admin_key}"}, timeout=30)
    down = api.post("/api/v1/conversations", json={})
    assert down.status_code == 503 and "the conversation service is unreachable" in down.json()["error"]["message"]
    assert down.headers["retry-after"] == "5"
    chat = api.post("/v1/chat/completions", json={"model": "fake", "messages": [{"role": "user", "content": "still there?"}]})
    assert chat.status_code == 200 and chat.json()["choices"][0]["message"]["content"] == "You said: still there?"


def test_a_retried_post_with_an_idempotency_key_gets_the_same_stream(api: httpx.Client, fake_openai: FakeOpenAI) -> None:
    conversation_id = api.post("/api/v1/conversations", json={}).json()["id"]
    headers = {"Idempotency-Key": "turn-7f3a"}
    first = stream(api, f"/api/v1/conversations/{conversation_id}/messages", {"content": "Only once"}, headers=headers)
    again = stream(api, f"/api/v1/conversations/{conversation_id}/messages", {"content": "Only once"}, headers=headers)
    assert [(e.id, e.event, e.data) for e in again] == [(e.id, e.event, e.data) for e in first]
    assert len(fake_openai.requests) == 1, "one generation"
    stored = settled(api, conversation_id, first[0].json()["assistant_message_id"])
    assert [m["role"] for m in stored["messages"]] == ["user", "assistant"], "one stored turn"
    other = stream(
        api, f"/api/v1/conversations/{conversation_id}/messages", {"content": "A new one"}, headers={"Idempotency-Key": "turn-8b1c"}
    )
    assert other[0].json()["request_id"] != first[0].json()["request_id"]


def test_an_answer_is_readable_the_moment_its_stream_is_done(api: httpx.Client) -> None:
    """Read-your-writes: right after `done`, the conversation shows the answer complete (the stored event may come later)."""
    conversation_id = api.post("/api/v1/conversations", json={"title": "rw"}).json()["id"]
    for turn in range(10):
        events = stream(api, f"/api/v1/conversations/{conversation_id}/messages", {"content": f"question {turn}"})
        start, done = events[0].json(), events[-1]
        assert done.event == "done"
        answer = next(
            m for m in api.get(f"/api/v1/conversations/{conversation_id}").json()["messages"] if m["id"] == start["assistant_message_id"]
        )
        assert (answer["status"], answer["content"]) == ("complete", REPLY), f"turn {turn}"
        assert answer["usage"] and answer["usage"]["output_tokens"] > 0
        regenerated = stream(api, f"/api/v1/conversations/{conversation_id}/messages/{start['assistant_message_id']}/regenerate", {})
        again = regenerated[0].json()["assistant_message_id"]
        answer = next(m for m in api.get(f"/api/v1/conversations/{conversation_id}").json()["messages"] if m["id"] == again)
        assert (answer["status"], answer["content"]) == ("complete", REPLY), f"regenerated {turn}"
