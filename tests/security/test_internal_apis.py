"""The gateway is the only door: internal services believe only calls the gateway signed."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from chatbot_contracts.signing import Signer
from chatbot_devtools.kustomize import render
from chatbot_devtools.platform import INTERNAL_SECRET
from chatbot_devtools.signed import SignedAs

from .conftest import Stack

pytestmark = [pytest.mark.e2e, pytest.mark.security]

ROOT = Path(__file__).parents[2]
METRICS_PORTS = {9100, 9101, 9102, 9103, 9104}


def _signed(method: str, path: str, query: str = "", body: bytes = b"", owner: str | None = "alice", admin: bool = False) -> dict[str, str]:
    return Signer(INTERNAL_SECRET).headers(method, path, query, body, owner, admin)


def test_unsigned_stale_replayed_or_tampered_calls_get_401(start_stack: Callable[..., Stack]) -> None:
    stack = start_stack()
    alice = stack.client(stack.key("alice"))
    made = alice.post("/api/v1/conversations", json={"title": "private"}).json()
    for base, path in ((stack.conversation, "/internal/v1/conversations"), (stack.log_collector, "/internal/v1/usage")):
        with httpx.Client(base_url=base, timeout=10) as neighbour:
            claimed = neighbour.get(path, headers={"x-chatbot-owner": "alice", "x-chatbot-admin": "1"})
            assert claimed.status_code == 401 and "not signed" in claimed.json()["error"]["message"], "an identity claimed in a header"
            wrong_secret = Signer("another-secret-of-at-least-32-characters").headers("GET", path, "", b"", "alice", True)
            assert neighbour.get(path, headers=wrong_secret).status_code == 401
            stale = _signed("GET", path)
            stale["x-chatbot-time"] = f"{time.time() - 31:.3f}"
            assert neighbour.get(path, headers=stale).status_code == 401, "older than 30 s"
            fresh = _signed("GET", path)
            assert neighbour.get(path, headers=fresh).status_code == 200
            replayed = neighbour.get(path, headers=fresh)
            assert replayed.status_code == 401 and "replayed" in replayed.json()["error"]["message"]
            promoted = _signed("GET", path)
            promoted["x-chatbot-admin"] = "1"
            assert neighbour.get(path, headers=promoted).status_code == 401, "the admin flag is signed"
            other = _signed("GET", path, owner="bob")
            other["x-chatbot-owner"] = "alice"
            assert neighbour.get(path, headers=other).status_code == 401, "the owner is signed"
            twice = list(_signed("GET", path, owner="bob").items())
            doubled = neighbour.get(path, headers=[("x-chatbot-owner", "alice"), *twice])
            assert doubled.status_code == 401 and "twice" in doubled.json()["error"]["message"]
            assert neighbour.get("/healthz").status_code == 200 and neighbour.get("/readyz").status_code == 200, "probes stay open"
            metrics = neighbour.get("/metrics")
            assert metrics.status_code in (401, 404) and "# TYPE" not in metrics.text, "metrics are on their own port"
    with httpx.Client(base_url=stack.conversation, timeout=10) as neighbour:
        body = b'{"title": "renamed by a neighbour"}'
        headers = _signed("PATCH", f"/internal/v1/conversations/{made['id']}", body=body)
        tampered = neighbour.patch(f"/internal/v1/conversations/{made['id']}", content=b'{"title": "tampered"}', headers=headers)
        assert tampered.status_code == 401
        query = _signed("GET", "/internal/v1/search", query="q=private&limit=1")
        assert neighbour.get("/internal/v1/search", params={"q": "other", "limit": "1"}, headers=query).status_code == 401, (
            "the query is signed"
        )
        # What the gateway signs is believed: the same call through the gateway works.
        assert neighbour.get(f"/internal/v1/conversations/{made['id']}", auth=SignedAs("alice")).status_code == 200
    assert alice.get(f"/api/v1/conversations/{made['id']}").json()["title"] == "private"


def test_every_service_serves_metrics_on_a_port_of_its_own(start_stack: Callable[..., Stack]) -> None:
    stack = start_stack()
    for service in ("gateway", "conversation", "log-collector", "inference"):
        url = stack.platform.metrics_url(service)
        assert "# TYPE" in httpx.get(url, timeout=5).text, service
        assert url.startswith("http://127.0.0.1:")
    assert stack.client().get("/metrics").status_code in (401, 404), "not on the public port"


@pytest.mark.parametrize("overlay", ["dev", "prod"])
def test_the_monitoring_namespace_reaches_metrics_ports_only(overlay: str) -> None:
    docs = render(ROOT / "deploy" / "k8s" / "overlays" / overlay)
    reachable: set[int] = set()
    for doc in docs:
        if doc["kind"] != "NetworkPolicy":
            continue
        for rule in doc["spec"].get("ingress", []):
            peers = rule.get("from", [])
            monitoring = any(
                p.get("namespaceSelector", {}).get("matchLabels", {}).get("kubernetes.io/metadata.name") == "monitoring" for p in peers
            )
            if monitoring:
                reachable |= {port["port"] for port in rule.get("ports", [])}
    assert reachable == METRICS_PORTS, f"{overlay}: the monitoring namespace reaches {sorted(reachable)}"
    for doc in docs:
        if doc["kind"] == "Deployment":
            assert doc["spec"]["template"]["spec"]["automountServiceAccountToken"] is False, doc["metadata"]["name"]
