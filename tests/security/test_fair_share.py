"""No tenant can overspend or take another's share: budgets, running requests, open streams, failed logins."""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import Callable

import httpx
import pytest
import redis

from chatbot_contracts import Keys

from .conftest import Stack

pytestmark = [pytest.mark.e2e, pytest.mark.security]


async def _chat(url: str, key: str, content: str, **extra: object) -> httpx.Response:
    async with httpx.AsyncClient(base_url=url, headers={"Authorization": f"Bearer {key}"}, timeout=60) as http:
        body = {"model": "fake", "messages": [{"role": "user", "content": content}], "max_tokens": 50, **extra}
        return await http.post("/v1/chat/completions", json=body)


def test_concurrent_requests_never_spend_past_the_budget(start_stack: Callable[..., Stack]) -> None:
    stack = start_stack()
    stack.fake.token_delay_s = 0.05
    # At $1,000 per million tokens each way, a request of "hi" may cost up to (2 bytes + 4) + 50 tokens: $0.056.
    budget = 0.17
    key = stack.key("frank", budget_usd=budget, budget_period="day")

    async def twenty() -> list[httpx.Response]:
        return await asyncio.gather(*(_chat(stack.gateway, key, "hi") for _ in range(20)))

    responses = asyncio.run(twenty())
    statuses = sorted(r.status_code for r in responses)
    assert statuses.count(200) == 3 and statuses.count(429) == 17, statuses
    assert all(r.json()["error"]["code"] == "budget_exceeded" for r in responses if r.status_code == 429)
    time.sleep(1.5)  # the collector stores the events in batches
    usage = stack.admin.get("/api/v1/usage", params={"owner": "frank", "group_by": "key"}).json()["totals"]
    assert usage["completed"] == 3 and 0 < usage["cost_usd"] <= budget, usage
    spent = redis.Redis.from_url(stack.platform.env["REDIS_URL"]).get(
        Keys(stack.platform.env["CHATBOT_REDIS_NAMESPACE"]).spend(_key_id(stack, "frank"), "day")
    )
    assert spent is not None and float(spent) == pytest.approx(usage["cost_usd"], abs=1e-9), "reservations settled to the real cost"


def _key_id(stack: Stack, owner: str) -> str:
    return next(k["id"] for k in stack.admin.get("/api/v1/admin/keys").json() if k["owner"] == owner)


def test_a_key_past_its_open_streams_gets_429_while_another_key_streams(start_stack: Callable[..., Stack]) -> None:
    stack = start_stack(CHATBOT_MAX_STREAMS_PER_KEY="3")
    stack.fake.token_delay_s = 0.5
    greedy, polite = stack.key("greedy"), stack.key("polite")

    async def scenario() -> tuple[list[int], int, int]:
        held = [asyncio.create_task(_chat(stack.gateway, greedy, "one two three four five six", stream=True)) for _ in range(3)]
        await asyncio.sleep(1.0)
        refused = await _chat(stack.gateway, greedy, "more", stream=True)
        other = await _chat(stack.gateway, polite, "mine", stream=True)
        done = await asyncio.gather(*held)
        assert refused.json()["error"]["code"] == "too_many_streams" and refused.headers["retry-after"]
        return [r.status_code for r in done], refused.status_code, other.status_code

    held, refused, other = asyncio.run(scenario())
    assert held == [200, 200, 200] and refused == 429 and other == 200
    assert asyncio.run(_chat(stack.gateway, greedy, "again", stream=True)).status_code == 200, "the slots come back when streams end"


def test_a_replayed_idempotent_turn_counts_like_any_stream(start_stack: Callable[..., Stack]) -> None:
    stack = start_stack()
    stack.fake.token_delay_s = 0.3
    key = stack.key("ivan", max_streams=1)
    http = stack.client(key)
    conversation = http.post("/api/v1/conversations", json={"model": "fake"}).json()["id"]
    url = f"/api/v1/conversations/{conversation}/messages"
    with http.stream("POST", url, json={"content": "count to five"}, headers={"Idempotency-Key": "turn-1"}) as first:
        assert first.status_code == 200
        lines = first.iter_lines()  # held: a dropped iterator closes the response
        next(lines)
        replay = stack.client(key).post(url, json={"content": "count to five"}, headers={"Idempotency-Key": "turn-1"})
        assert replay.status_code == 429 and replay.json()["error"]["code"] == "too_many_streams"
        del lines
    time.sleep(0.3)
    with stack.client(key).stream("POST", url, json={"content": "count to five"}, headers={"Idempotency-Key": "turn-1"}) as again:
        assert again.status_code == 200, "once the first stream closed, the replay is served"


def test_failed_authentication_is_bounded_per_address_and_evicts_no_valid_key(start_stack: Callable[..., Stack]) -> None:
    stack = start_stack(CHATBOT_AUTH_FAILURES_PER_MINUTE="20", CHATBOT_TRUSTED_PROXY_HEADER="x-forwarded-for")
    valid = stack.key("victor")
    with stack.client(valid, **{"x-forwarded-for": "198.51.100.7"}) as ok:
        assert ok.get("/v1/models").status_code == 200
    attacker = httpx.Client(base_url=stack.gateway, headers={"x-forwarded-for": "proxy, 203.0.113.9"}, timeout=10)
    statuses = [
        attacker.get("/v1/models", headers={"Authorization": f"Bearer sk-chatbot-{secrets.token_urlsafe(32)}"}).status_code
        for _ in range(25)
    ]
    assert statuses[:20] == [401] * 20 and statuses[20:] == [429] * 5, statuses
    limited = attacker.get("/v1/models", headers={"Authorization": "Bearer not-even-a-key"})
    assert limited.status_code == 429 and 0 < int(limited.headers["retry-after"]) <= 60
    assert limited.json()["error"]["code"] == "too_many_failed_authentications"
    with stack.client(valid, **{"x-forwarded-for": "198.51.100.7"}) as ok:
        assert ok.get("/v1/models").status_code == 200, "another address is not affected"
    malformed = [attacker.get("/v1/models", headers={"Authorization": f"Bearer {'x' * n}"}).status_code for n in (1, 5000)]
    assert malformed == [429, 429]


def test_admin_is_no_tenants_name(start_stack: Callable[..., Stack]) -> None:
    stack = start_stack()
    refused = stack.admin.post("/api/v1/admin/keys", json={"owner": "admin"})
    assert refused.status_code == 400 and "owner" in refused.json()["error"]["message"]
    admins_own = stack.admin.post("/api/v1/conversations", json={"title": "the admin's"}).json()["id"]
    tenant = stack.client(stack.key("Admin"))
    assert tenant.get(f"/api/v1/conversations/{admins_own}").status_code == 404
