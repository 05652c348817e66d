"""Schemathesis against the gateway's own OpenAPI schema: generated requests never get a 5xx, and 2xx bodies match the schema."""

from __future__ import annotations

import os
import random
from collections.abc import Callable

import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, seed, settings
from schemathesis.checks import not_a_server_error, response_schema_conformance

from chatbot_devtools.fakes import FakeOpenAI
from chatbot_devtools.platform import LocalPlatform

pytestmark = pytest.mark.e2e


def test_generated_requests_never_break_the_gateway(
    platform_factory: Callable[..., LocalPlatform], fake_registry: str, fake_openai: FakeOpenAI, capsys: pytest.CaptureFixture[str]
) -> None:
    platform = platform_factory(fake_registry)
    platform.env["CHATBOT_REQUEST_TIMEOUT_S"] = "20"
    platform.start_conversation()
    platform.start_log_collector()
    url = platform.start_gateway()
    platform.start_worker()
    platform.wait_ready(url)
    schema = schemathesis.openapi.from_url(f"{url}/schema/openapi.json")
    # A fresh seed each run explores new inputs; it is printed so that a failure can be replayed
    # (CHATBOT_FUZZ_SEED=<seed>), and every failure found is kept as a test in tests/security.
    fuzz_seed = int(os.environ.get("CHATBOT_FUZZ_SEED") or random.randrange(2**32))
    with capsys.disabled():  # shown in every run, passed or not
        print(f"\nschemathesis seed: {fuzz_seed} (replay: CHATBOT_FUZZ_SEED={fuzz_seed})", flush=True)
    failures: list[str] = []
    statuses: list[int] = []

    for operation in schema.get_all_operations():
        api = operation.ok()
        if api.path in ("/api/v1/requests/{request_id}/events",):
            continue  # an open stream: it lasts until its request's deadline by design

        @settings(max_examples=40, deadline=None, phases=[Phase.generate], suppress_health_check=list(HealthCheck), database=None)
        @seed(fuzz_seed)
        @given(case=api.as_strategy())
        def run(case: schemathesis.Case) -> None:
            response = case.call(base_url=url, headers={"Authorization": f"Bearer {platform.admin_key}"}, timeout=30)
            statuses.append(response.status_code)
            try:
                case.validate_response(response, checks=[not_a_server_error, response_schema_conformance])
            except Exception as exc:  # collected, so that one run reports every broken operation
                failures.append(f"{case.method} {case.path} -> {response.status_code}: {str(exc)[:400]}")

        run()
    assert not failures, f"seed {fuzz_seed}:\n" + "\n".join(failures[:20])
    assert len(statuses) > 200 and any(200 <= s < 300 for s in statuses), "the fuzzing reached the routes, valid requests included"
