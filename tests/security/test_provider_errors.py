"""A provider's failure reaches the tenant as its class and a safe message: no key, no internal address."""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest

from chatbot_devtools.fakes import Fault

from .conftest import Stack

pytestmark = [pytest.mark.e2e, pytest.mark.security]

LEAKY = (
    "Incorrect API key provided: sk-proj-Abc123DEF456ghi789JKL012mno345PQR. You can find your API key at "
    "https://platform.openai.com/account/api-keys. Upstream 10.12.0.7:8443 (vllm-pool.internal:8000) said Bearer eyJhbGciOi.secret"
)


def test_a_provider_error_holding_a_key_reaches_the_tenant_without_it(start_stack: Callable[..., Stack]) -> None:
    stack = start_stack()
    http = stack.client(stack.key("tina"))
    body = {"model": "fake", "messages": [{"role": "user", "content": "hi"}]}
    for status in (401, 400, 500):
        stack.fake.faults.extend([Fault(status=status, message=LEAKY)] * 3)
        response = http.post("/v1/chat/completions", json=body)
        assert response.status_code >= 400
        text = response.text
        for secret in ("sk-proj-Abc123", "10.12.0.7", "8443", "vllm-pool.internal", "eyJhbGciOi", "platform.openai.com"):
            assert secret not in text, (status, secret, text)
        stack.fake.faults.clear()
    conversation = http.post("/api/v1/conversations", json={"model": "fake"}).json()["id"]
    stack.fake.faults.extend([Fault(status=401, message=LEAKY)] * 3)
    with http.stream("POST", f"/api/v1/conversations/{conversation}/messages", json={"content": "hi"}) as streamed:
        events = "".join(streamed.iter_text())
    assert "authentication" in events and "sk-proj" not in events and "10.12.0.7" not in events
    deadline = time.monotonic() + 10
    while (stored := http.get(f"/api/v1/conversations/{conversation}").json()["messages"][-1])["status"] == "streaming":
        assert time.monotonic() < deadline, "the failure is stored"
        time.sleep(0.05)
    assert stored["status"] == "failed" and "sk-proj" not in (stored["error"] or "") and "10.12.0.7" not in (stored["error"] or "")
    log = stack.platform.workdir / "worker.log"
    while "Incorrect API key provided" not in log.read_text():
        assert time.monotonic() < deadline + 10, "the full text is logged"
        time.sleep(0.1)
    assert "sk-proj-Abc123" not in log.read_text() and "10.12.0.7" not in log.read_text(), "secrets masked in logs too"
