"""API keys and tenants: keys belong to owners, owners never see each other's data, revocation is fast everywhere."""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest

from chatbot_devtools.fakes import FakeOpenAI
from chatbot_devtools.platform import LocalPlatform, registry_toml
from chatbot_devtools.platform import api_client as client
from chatbot_devtools.platform import create_key as make_key

pytestmark = pytest.mark.e2e


@pytest.fixture
def gateways(platform_factory: Callable[..., LocalPlatform], fake_openai: FakeOpenAI) -> tuple[LocalPlatform, str, str]:
    registry = registry_toml(
        {
            "fake": {"provider": "openai", "upstream_model": "fake-model", "base_url": fake_openai.base_url, "input_usd_per_mtok": 1000.0},
            "other": {"provider": "openai", "upstream_model": "other-model", "base_url": fake_openai.base_url},
        }
    )
    platform = platform_factory(registry)
    platform.start_conversation()
    first, second = platform.start_gateway("gateway-1"), platform.start_gateway("gateway-2")
    platform.start_worker()
    platform.wait_ready(first)
    return platform, first, second


def test_keys_are_created_listed_without_secrets_and_revoked_on_every_replica(gateways: tuple[LocalPlatform, str, str]) -> None:
    platform, first, second = gateways
    alice = make_key(first, platform.admin_key, owner="alice", rpm=60)
    assert alice["key"].startswith("sk-chatbot-") and alice["owner"] == "alice" and alice["prefix"] == alice["key"][:16]
    listed = client(first, platform.admin_key).get("/api/v1/admin/keys").json()
    assert [k["id"] for k in listed] == [alice["id"]] and all("key" not in k for k in listed)
    assert alice["key"] not in (platform.workdir / "conversations.db").read_bytes().decode(errors="ignore"), "only a hash is stored"
    for url in (first, second):
        assert client(url, alice["key"]).get("/v1/models").status_code == 200
        assert client(url, alice["key"]).get("/api/v1/admin/keys").status_code == 403
    assert client(second, platform.admin_key).delete(f"/api/v1/admin/keys/{alice['id']}").status_code == 204
    time.sleep(1.1)
    for url in (first, second):
        refused = client(url, alice["key"]).get("/v1/models")
        assert refused.status_code == 401, "revoked on every replica within a second"
    assert client(first, platform.admin_key).delete(f"/api/v1/admin/keys/{alice['id']}").status_code == 404
    bad = client(first, platform.admin_key).post("/api/v1/admin/keys", json={"owner": "x", "rpm": 0})
    assert bad.status_code == 400 and "`$.rpm`" in bad.json()["error"]["message"]


def test_a_key_uses_only_its_models(gateways: tuple[LocalPlatform, str, str]) -> None:
    platform, first, _ = gateways
    narrow = client(first, make_key(first, platform.admin_key, owner="carol", models=["fake"])["key"])
    assert [m["id"] for m in narrow.get("/v1/models").json()["data"]] == ["fake"]
    assert narrow.post("/v1/chat/completions", json={"model": "fake", "messages": [{"role": "user", "content": "hi"}]}).status_code == 200
    refused = narrow.post("/v1/chat/completions", json={"model": "other", "messages": [{"role": "user", "content": "hi"}]})
    assert refused.status_code == 403 and refused.json()["error"]["code"] == "model_not_allowed"


def test_owners_never_see_each_others_data(gateways: tuple[LocalPlatform, str, str]) -> None:
    platform, first, second = gateways
    alice = client(first, make_key(first, platform.admin_key, owner="alice")["key"])
    bob = client(second, make_key(first, platform.admin_key, owner="bob")["key"])
    admin = client(first, platform.admin_key)
    conversation = alice.post("/api/v1/conversations", json={"title": "Alice's secret plan"}).json()["id"]
    with alice.stream("POST", f"/api/v1/conversations/{conversation}/messages", json={"content": "classified question"}) as response:
        body = response.read().decode()
    request_id = body.split('"request_id":"')[1].split('"')[0]
    deadline = time.monotonic() + 10
    while (
        alice.get(f"/api/v1/conversations/{conversation}").json()["messages"][-1]["status"] == "streaming" and time.monotonic() < deadline
    ):
        time.sleep(0.05)
    message_id = alice.get(f"/api/v1/conversations/{conversation}").json()["messages"][-1]["id"]
    alice.post(f"/api/v1/conversations/{conversation}/share")
    c = f"/api/v1/conversations/{conversation}"
    attempts = [
        ("GET", c, None),
        ("PATCH", c, {"title": "mine now"}),
        ("DELETE", c, None),
        ("POST", f"{c}/messages", {"content": "hi"}),
        ("POST", f"{c}/messages/{message_id}/regenerate", {}),
        ("PUT", f"{c}/active-leaf", {"message_id": message_id}),
        ("POST", f"{c}/fork", {"message_id": message_id}),
        ("POST", f"{c}/share", None),
        ("DELETE", f"{c}/share", None),
        ("GET", f"{c}/export", None),
        ("GET", f"/api/v1/requests/{request_id}/events", None),
        ("POST", f"/api/v1/requests/{request_id}/cancel", None),
    ]
    for method, path, payload in attempts:
        response = bob.request(method, path, json=payload)
        assert response.status_code == 404, f"{method} {path} answered {response.status_code} to another owner"
        missing = bob.request(method, path.replace(conversation, "0" * 32).replace(request_id, "f" * 32), json=payload)
        assert missing.status_code == 404 and set(missing.json()) == set(response.json()), "the same answer as for nothing at all"
    assert bob.get("/api/v1/conversations").json()["items"] == []
    assert bob.get("/api/v1/search", params={"q": "classified"}).json()["hits"] == []
    # Alice's data is untouched; an admin sees it.
    assert alice.get(c).json()["title"] == "Alice's secret plan"
    assert admin.get(c).status_code == 200
    assert {h["conversation_id"] for h in admin.get("/api/v1/search", params={"q": "classified"}).json()["hits"]} == {conversation}


def test_two_gateways_together_admit_at_most_the_keys_limit(gateways: tuple[LocalPlatform, str, str]) -> None:
    import threading

    platform, first, second = gateways
    key = make_key(first, platform.admin_key, owner="dave", rpm=10)["key"]
    statuses: list[int] = []
    started = time.monotonic()

    def hammer(url: str) -> None:
        with client(url, key) as http:
            for _ in range(15):
                statuses.append(
                    http.post("/v1/chat/completions", json={"model": "fake", "messages": [{"role": "user", "content": "go"}]}).status_code
                )

    threads = [threading.Thread(target=hammer, args=(url,)) for url in (first, second, first, second)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    refilled = int((time.monotonic() - started) * 10 / 60)
    assert statuses.count(200) <= 10 + refilled, f"{statuses.count(200)} admitted with a limit of 10 a minute"
    assert statuses.count(200) >= 10 and set(statuses) == {200, 429}
    refused = client(second, key).post("/v1/chat/completions", json={"model": "fake", "messages": [{"role": "user", "content": "go"}]})
    assert refused.status_code == 429 and int(refused.headers["retry-after"]) >= 1
    assert refused.headers["x-ratelimit-limit-requests"] == "10" and refused.headers["x-ratelimit-remaining-requests"] == "0"
    assert "rate limit is reached" in refused.json()["error"]["message"]


def test_tokens_are_reserved_from_max_tokens_and_settled_from_usage(gateways: tuple[LocalPlatform, str, str]) -> None:
    platform, first, _ = gateways
    http = client(first, make_key(first, platform.admin_key, owner="erin", tpm=1000)["key"])
    ok = http.post("/v1/chat/completions", json={"model": "fake", "max_tokens": 600, "messages": [{"role": "user", "content": "hello"}]})
    assert ok.status_code == 200 and ok.headers["x-ratelimit-limit-tokens"] == "1000"
    assert int(ok.headers["x-ratelimit-remaining-tokens"]) < 400, "the answer's budget was taken up front"
    time.sleep(0.3)  # the worker gives back what the answer did not use
    again = http.post("/v1/chat/completions", json={"model": "fake", "max_tokens": 600, "messages": [{"role": "user", "content": "hello"}]})
    assert again.status_code == 200, "settled from real usage, the bucket had room again"
    too_big = http.post(
        "/v1/chat/completions", json={"model": "fake", "max_tokens": 1500, "messages": [{"role": "user", "content": "hello"}]}
    )
    assert (
        too_big.status_code == 429
        and "more than allowed per minute (this key: - requests, 1000 tokens per minute)" in too_big.json()["error"]["message"]
    )


def test_a_key_past_its_budget_gets_a_429_that_says_so(gateways: tuple[LocalPlatform, str, str]) -> None:
    platform, first, second = gateways
    created = make_key(first, platform.admin_key, owner="frank", budget_usd=0.02, budget_period="day")
    assert (created["budget_usd"], created["budget_period"]) == (0.02, "day")
    http = client(first, created["key"])
    # At $1,000 per million input tokens: at most (14 bytes + 4) tokens reserved, $0.018; the fake counts 3 + 3, $0.006.
    assert (
        http.post("/v1/chat/completions", json={"model": "fake", "messages": [{"role": "user", "content": "spend a little"}]}).status_code
        == 200
    )
    time.sleep(0.3)  # the worker settles the reservation with the real cost when the answer ends
    refused = client(second, created["key"]).post(
        "/v1/chat/completions", json={"model": "fake", "messages": [{"role": "user", "content": "a question of twenty"}]}
    )
    assert refused.status_code == 429 and refused.json()["error"]["code"] == "budget_exceeded"
    assert "budget of $0.02 per day cannot cover this request ($0.0060 spent or reserved" in refused.json()["error"]["message"]
    smaller = client(second, created["key"]).post(
        "/v1/chat/completions", json={"model": "fake", "messages": [{"role": "user", "content": "more"}]}
    )
    assert smaller.status_code == 200, "what the rest of the budget covers still runs"


def test_an_owners_limit_holds_over_all_its_keys(gateways: tuple[LocalPlatform, str, str]) -> None:
    platform, first, second = gateways
    admin = client(first, platform.admin_key)
    set_limits = admin.put("/api/v1/admin/owners/team-x", json={"rpm": 3})
    assert set_limits.status_code == 200 and set_limits.json() == {"owner": "team-x", "rpm": 3, "tpm": None}
    assert admin.get("/api/v1/admin/owners").json() == [{"owner": "team-x", "rpm": 3, "tpm": None}]
    keys = [make_key(first, platform.admin_key, owner="team-x")["key"] for _ in range(2)]
    body = {"model": "fake", "messages": [{"role": "user", "content": "go"}]}
    statuses = [
        client(url, key).post("/v1/chat/completions", json=body).status_code
        for url, key in ((first, keys[0]), (second, keys[1]), (first, keys[1]), (second, keys[0]))
    ]
    assert statuses == [200, 200, 200, 429], "three a minute for the whole team, whichever key and gateway"
    refused = client(first, keys[0]).post("/v1/chat/completions", json=body)
    assert "owner team-x: 3 requests" in refused.json()["error"]["message"]
    other = make_key(first, platform.admin_key, owner="someone-else")["key"]
    assert client(first, other).post("/v1/chat/completions", json=body).status_code == 200
