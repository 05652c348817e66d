"""Usage through the gateway (exact, and each owner's own), and every service's metrics moving after real turns."""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from chatbot_devtools.fakes import FakeOpenAI, Fault
from chatbot_devtools.platform import LocalPlatform, api_client, create_key, registry_toml

pytestmark = pytest.mark.e2e
INPUT_PRICE, OUTPUT_PRICE = 2_000.0, 8_000.0
"""Dollars per million tokens: large, so that every request's cost shows in cents."""


@pytest.fixture
def stack(platform_factory: Callable[..., LocalPlatform], fake_openai: FakeOpenAI) -> tuple[LocalPlatform, str]:
    registry = registry_toml(
        {
            "fake": {
                "provider": "openai", "upstream_model": "fake-model", "base_url": fake_openai.base_url,
                "input_usd_per_mtok": INPUT_PRICE, "output_usd_per_mtok": OUTPUT_PRICE,
            }
        }
    )  # fmt: skip
    platform = platform_factory(registry)
    platform.start_conversation()
    platform.start_log_collector()
    url = platform.start_gateway()
    platform.start_worker(CHATBOT_PROVIDER_RETRIES="1", CHATBOT_RETRY_BASE_S="0.01", CHATBOT_RETRY_MAX_S="0.02")
    platform.wait_ready(url)
    return platform, url


def _key(url: str, admin: str, owner: str) -> str:
    return str(create_key(url, admin, owner=owner)["key"])


def _chat(client: httpx.Client, content: str) -> httpx.Response:
    return client.post("/v1/chat/completions", json={"model": "fake", "messages": [{"role": "user", "content": content}]})


def _wait_for(client: httpx.Client, requests: int) -> dict[str, Any]:
    for _ in range(200):
        report = client.get("/api/v1/usage")
        if report.status_code == 200 and report.json()["totals"]["requests"] >= requests:
            return report.json()  # type: ignore[no-any-return]
        time.sleep(0.05)
    raise AssertionError(f"usage never reached {requests} requests: {report.text}")


def test_usage_is_exact_and_each_owner_sees_only_its_own(stack: tuple[LocalPlatform, str], fake_openai: FakeOpenAI) -> None:
    platform, url = stack
    admin = api_client(url, platform.admin_key)
    alice, bob = api_client(url, _key(url, platform.admin_key, "alice")), api_client(url, _key(url, platform.admin_key, "bob"))
    answers = [_chat(alice, "one"), _chat(alice, "two, three")]
    fake_openai.faults.append(Fault(status=500, message="hiccup"))
    answers.append(_chat(alice, "after a retry"))
    fake_openai.faults.extend([Fault(status=500, message="down"), Fault(status=500, message="still down")])
    failed = _chat(bob, "no luck")
    assert [a.status_code for a in answers] == [200, 200, 200] and failed.status_code == 502

    mine = _wait_for(alice, 3)
    used = [a.json()["usage"] for a in answers]
    inputs, outputs = sum(u["prompt_tokens"] for u in used), sum(u["completion_tokens"] for u in used)
    assert (mine["totals"]["requests"], mine["totals"]["completed"], mine["totals"]["retries"]) == (3, 3, 1)
    assert (mine["totals"]["input_tokens"], mine["totals"]["output_tokens"]) == (inputs, outputs)
    assert mine["totals"]["cost_usd"] == pytest.approx((inputs * INPUT_PRICE + outputs * OUTPUT_PRICE) / 1e6, abs=1e-6)
    assert [bucket["group"] for bucket in mine["data"]] == ["fake"]

    theirs = _wait_for(bob, 1)["totals"]
    assert (theirs["requests"], theirs["failed"], theirs["errors"], theirs["retries"]) == (1, 1, {"upstream_error": 1}, 1)
    everyone = admin.get("/api/v1/usage", params={"group_by": "owner"}).json()
    assert {bucket["group"]: bucket["requests"] for bucket in everyone["data"]} == {"alice": 3, "bob": 1}
    assert admin.get("/api/v1/usage", params={"owner": "bob"}).json()["totals"]["requests"] == 1

    request_id = answers[2].headers["x-request-id"]
    log = alice.get(f"/api/v1/requests/{request_id}/log")
    assert log.status_code == 200
    kinds = [event["type"] for event in log.json()["events"]]
    assert kinds[0] == "queued" and kinds.count("started") == 2 and kinds[-1] == "completed", "a retry starts twice"
    assert bob.get(f"/api/v1/requests/{request_id}/log").status_code == 404

    exported = alice.get("/api/v1/usage/export", params={"format": "csv"})
    assert exported.status_code == 200 and exported.headers["content-type"].startswith("text/csv")
    assert "no luck" not in exported.text and "bob" not in exported.text and exported.text.count("completed") == 3

    wrong = alice.get("/api/v1/usage", params={"group_by": "colour"})
    assert wrong.status_code == 400 and "group_by" in wrong.text


def _metric(text: str, name: str, **labels: str) -> float:
    """The sum of a metric's samples whose labels include `labels` (0 when there is none)."""
    total = 0.0
    for line in text.splitlines():
        match = re.match(rf"^{re.escape(name)}(?:\{{(.*)\}})? (\S+)$", line)
        if match and all(f'{k}="{v}"' in (match.group(1) or "") for k, v in labels.items()):
            total += float(match.group(2))
    return total


def test_every_service_serves_its_metrics_and_they_move(stack: tuple[LocalPlatform, str]) -> None:
    platform, url = stack
    api = api_client(url, platform.admin_key)
    conversation = api.post("/api/v1/conversations", json={"model": "fake"}).json()["id"]
    turn = api.post(f"/api/v1/conversations/{conversation}/messages", json={"content": "Count me in, all of you"})
    assert "event: done" in turn.text
    limited = api_client(url, _key(url, platform.admin_key, "carol"))
    api.put("/api/v1/admin/owners/carol", json={"rpm": 1})
    time.sleep(1.1)  # the key cache
    statuses = [_chat(limited, "hi").status_code for _ in range(2)]
    assert statuses == [200, 429]
    _wait_for(api, 2)

    texts = {
        "gateway": httpx.get(platform.metrics_url("gateway")).text,
        "worker": httpx.get(platform.metrics_url("inference")).text,
        "conversation": httpx.get(platform.metrics_url("conversation")).text,
        "collector": httpx.get(platform.metrics_url("log-collector")).text,
    }
    moved = {
        "gateway": [
            ("chatbot_http_requests_total", {"route": "/v1/chat/completions", "status": "200"}),
            ("chatbot_admissions_refused_total", {}),
            ("chatbot_gateway_time_to_first_token_seconds_count", {}),
            ("chatbot_platform_overhead_seconds_count", {}),
        ],
        "worker": [
            ("chatbot_queue_wait_seconds_count", {}),
            ("gen_ai_server_time_to_first_token_seconds_count", {"gen_ai_request_model": "fake"}),
            ("gen_ai_server_time_per_output_token_seconds_count", {"gen_ai_provider_name": "openai"}),
            ("gen_ai_client_operation_duration_seconds_count", {"outcome": "completed"}),
            ("gen_ai_client_token_usage_sum", {"gen_ai_token_type": "output"}),
        ],
        "conversation": [
            ("chatbot_db_query_duration_seconds_count", {"operation": "insert"}),
            ("chatbot_conversation_events_total", {"type": "completed"}),
        ],
        "collector": [
            ("chatbot_log_collector_events_total", {"type": "completed"}),
            ("chatbot_log_collector_events_stored_total", {}),
            ("chatbot_db_query_duration_seconds_count", {"operation": "insert"}),
        ],
    }
    for service, metrics in moved.items():
        for name, labels in metrics:
            assert _metric(texts[service], name, **labels) > 0, f"{service}: {name}{labels} did not move"
    present = {
        "gateway": ["chatbot_streams_in_flight"],
        "worker": ["chatbot_generations_in_flight", "chatbot_generation_errors", "chatbot_provider_retries", "chatbot_fallbacks",
                   "chatbot_claimed_requests", "chatbot_cancelled_generations"],
        "collector": ['chatbot_stream_group_lag{group="inference",stream="chat.requests"}',
                      'chatbot_stream_group_pending{group="conversation",stream="inference.events"}'],
    }  # fmt: skip
    for _ in range(150):  # the collector reads the groups every 5 s
        if all(name in texts["collector"] for name in present["collector"]):
            break
        time.sleep(0.1)
        texts["collector"] = httpx.get(platform.metrics_url("log-collector")).text
    for service, names in present.items():
        for name in names:
            assert name in texts[service], f"{service} does not serve {name}"
    for text in texts.values():
        assert "sk-" not in text and not re.search(r"[0-9a-f]{32}", text), "no key secrets or request ids in labels"
