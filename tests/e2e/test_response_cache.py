"""The response cache on the real stack: a hit is the exact answer with no upstream call, streamed or not; owners never
share entries unless the alias says so; hits are logged at no cost; the request's header and the admin's purge work."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from chatbot_devtools.fakes import FakeOpenAI
from chatbot_devtools.platform import LocalPlatform, api_client, create_key

pytestmark = pytest.mark.e2e
QUESTION = [{"role": "user", "content": "What is the capital of France?"}]


@pytest.fixture
def stack(platform_factory: Callable[..., LocalPlatform], fake_openai: FakeOpenAI) -> tuple[LocalPlatform, str]:
    fake_openai.reply = "Paris, since the tenth century."
    models = ""
    for alias, extra in (("cached", "cache_ttl_s = 60\n"), ("plain", ""), ("everyone", "cache_ttl_s = 60\ncache_shared = true\n")):
        models += f'[models."{alias}"]\nprovider = "openai"\nupstream_model = "fake-model"\nbase_url = "{fake_openai.base_url}"\n'
        models += f"input_usd_per_mtok = 1.0\noutput_usd_per_mtok = 2.0\n{extra}"
    platform = platform_factory(models)
    platform.start_conversation()
    platform.start_log_collector()
    url = platform.start_gateway()
    platform.start_worker()
    platform.wait_ready(url)
    return platform, url


def key_of(url: str, admin: str, owner: str) -> str:
    return str(create_key(url, admin, owner=owner)["key"])


def ask(client: httpx.Client, model: str, headers: dict[str, str] | None = None, **params: Any) -> httpx.Response:
    body = {"model": model, "messages": QUESTION, "temperature": 0, **params}
    response = client.post("/v1/chat/completions", json=body, headers=headers or {})
    assert response.status_code == 200, response.text
    return response


def streamed(client: httpx.Client, model: str) -> tuple[str, dict[str, str]]:
    body = {"model": model, "messages": QUESTION, "temperature": 0, "stream": True}
    with client.stream("POST", "/v1/chat/completions", json=body) as response:
        assert response.status_code == 200
        chunks = [json.loads(line[6:]) for line in response.iter_lines() if line.startswith("data: {")]
        headers = dict(response.headers)
    return "".join(choice["delta"].get("content") or "" for chunk in chunks for choice in chunk["choices"]), headers


def completed_event(client: httpx.Client, request_id: str) -> dict[str, Any]:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        log = client.get(f"/api/v1/requests/{request_id}/log")
        if log.status_code == 200 and (done := [e for e in log.json()["events"] if e["type"] == "completed"]):
            return done[0]  # type: ignore[no-any-return]
        time.sleep(0.1)
    raise AssertionError(f"no completed event for {request_id}")


def test_a_hit_is_the_exact_answer_with_no_upstream_call_streamed_or_not(stack: tuple[LocalPlatform, str], fake_openai: FakeOpenAI) -> None:
    platform, url = stack
    alice = api_client(url, key_of(url, platform.admin_key, "alice"))
    first = ask(alice, "cached")
    assert first.headers["x-chatbot-cache"] == "miss" and len(fake_openai.requests) == 1
    text = first.json()["choices"][0]["message"]["content"]
    assert text == "Paris, since the tenth century."

    again = ask(alice, "cached")
    assert again.headers["x-chatbot-cache"] == "hit" and len(fake_openai.requests) == 1, "no upstream call"
    assert again.json()["choices"][0]["message"]["content"] == text
    assert again.json()["usage"]["completion_tokens"] == first.json()["usage"]["completion_tokens"]
    replayed, headers = streamed(alice, "cached")
    assert (replayed, headers["x-chatbot-cache"]) == (text, "hit") and len(fake_openai.requests) == 1, "a hit replays as a stream"

    hit = completed_event(alice, again.headers["x-request-id"])
    miss = completed_event(alice, first.headers["x-request-id"])
    assert (hit["cache"], hit["cost_usd"], miss["cache"]) == ("hit", 0.0, "miss") and miss["cost_usd"] > 0

    deadline = time.monotonic() + 10
    while (totals := alice.get("/api/v1/usage").json()["totals"])["requests"] < 3 and time.monotonic() < deadline:
        time.sleep(0.1)
    assert (totals["requests"], totals["cache_hits"]) == (3, 2), "the usage counts the hits among the requests"
    assert totals["cost_usd"] == miss["cost_usd"], "hits cost nothing"

    other = ask(api_client(url, key_of(url, platform.admin_key, "bob")), "cached")
    assert other.headers["x-chatbot-cache"] == "miss" and len(fake_openai.requests) == 2, "another owner's identical request misses"


def test_only_repeatable_requests_are_cached_unless_asked_and_the_header_rules(
    stack: tuple[LocalPlatform, str], fake_openai: FakeOpenAI
) -> None:
    platform, url = stack
    carol = api_client(url, key_of(url, platform.admin_key, "carol"))
    for _ in range(2):
        sampled = ask(carol, "cached", temperature=0.9)
        assert "x-chatbot-cache" not in sampled.headers
    assert len(fake_openai.requests) == 2, "a sampled answer is not cached by default"
    ask(carol, "cached", seed=7, temperature=0.9)
    assert ask(carol, "cached", seed=7, temperature=0.9).headers["x-chatbot-cache"] == "hit", "a seed makes it repeatable"

    assert ask(carol, "plain", {"x-chatbot-cache": "use"}, temperature=0.9).headers["x-chatbot-cache"] == "miss"
    assert ask(carol, "plain", {"x-chatbot-cache": "use"}, temperature=0.9).headers["x-chatbot-cache"] == "hit", "asked: cached"
    assert "x-chatbot-cache" not in ask(carol, "plain", temperature=0.9).headers, "not asked, and the alias does not cache"
    calls = len(fake_openai.requests)
    assert "x-chatbot-cache" not in ask(carol, "cached", {"x-chatbot-cache": "skip"}).headers
    assert ask(carol, "cached", {"x-chatbot-cache": "refresh"}).headers["x-chatbot-cache"] == "miss"
    assert len(fake_openai.requests) == calls + 2, "skip and refresh both call the provider"
    bad = carol.post("/v1/chat/completions", json={"model": "cached", "messages": QUESTION}, headers={"x-chatbot-cache": "always"})
    assert bad.status_code == 400 and "x-chatbot-cache" in bad.json()["error"]["message"]


def test_a_shared_alias_serves_every_owner_and_an_admin_purges_by_owner(stack: tuple[LocalPlatform, str], fake_openai: FakeOpenAI) -> None:
    platform, url = stack
    dave, erin = (api_client(url, key_of(url, platform.admin_key, owner)) for owner in ("dave", "erin"))
    ask(dave, "everyone")
    assert ask(erin, "everyone").headers["x-chatbot-cache"] == "hit" and len(fake_openai.requests) == 1
    ask(dave, "cached")
    assert ask(dave, "cached").headers["x-chatbot-cache"] == "hit"

    assert dave.delete("/api/v1/cache", params={"owner": "dave"}).status_code == 403, "admins only"
    admin = api_client(url, platform.admin_key)
    purged = admin.delete("/api/v1/cache", params={"owner": "dave"})
    assert purged.status_code == 200 and purged.json() == {"scope": "dave", "deleted": 1}
    assert ask(dave, "cached").headers["x-chatbot-cache"] == "miss", "purged"
    assert ask(erin, "everyone").headers["x-chatbot-cache"] == "hit", "the shared entries are not dave's"
    assert admin.delete("/api/v1/cache", params={"shared": "true"}).json() == {"scope": "shared", "deleted": 1}
    assert admin.delete("/api/v1/cache").status_code == 400


def test_a_hit_counts_as_a_request_and_costs_no_tokens_of_the_keys_rate(stack: tuple[LocalPlatform, str], fake_openai: FakeOpenAI) -> None:
    platform, url = stack
    frank = api_client(url, create_key(url, platform.admin_key, owner="frank", tpm=10_000)["key"])
    answers = [ask(frank, "cached", max_tokens=3000) for _ in range(6)]  # each reserves about 3,000 tokens first
    assert [a.headers["x-chatbot-cache"] for a in answers] == ["miss"] + ["hit"] * 5, "none refused for want of tokens"
    assert len(fake_openai.requests) == 1


def test_anthropic_messages_are_cached_too(stack: tuple[LocalPlatform, str], fake_openai: FakeOpenAI) -> None:
    platform, url = stack
    client = api_client(url, platform.admin_key)
    body = {"model": "cached", "max_tokens": 100, "temperature": 0, "messages": QUESTION}
    first, again = (client.post("/v1/messages", json=body, headers={"anthropic-version": "2023-06-01"}) for _ in range(2))
    assert (first.status_code, again.status_code) == (200, 200), again.text
    assert (first.headers["x-chatbot-cache"], again.headers["x-chatbot-cache"]) == ("miss", "hit")
    assert again.json()["content"] == first.json()["content"] == [{"type": "text", "text": "Paris, since the tenth century."}]
    assert again.json()["stop_reason"] == "end_turn" and len(fake_openai.requests) == 1
