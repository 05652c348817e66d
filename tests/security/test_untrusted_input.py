"""Input from a tenant is hostile: bounded in size, depth and time, refused with a clear error, never able to stall others."""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Callable

import httpx
import msgspec
import pytest

from .conftest import Stack

pytestmark = [pytest.mark.e2e, pytest.mark.security]


def _cyclic_chatgpt_export() -> bytes:
    return msgspec.json.encode(
        [
            {
                "title": "loop",
                "current_node": "a",
                "mapping": {
                    "root": {"parent": None, "children": [], "message": None},
                    "a": {"parent": "b", "children": ["b"], "message": None},
                    "b": {"parent": "a", "children": ["a"], "message": None},
                },
            }
        ]
    )


def _long_chatgpt_export(nodes: int) -> bytes:
    """One long branch of `nodes` messages: heavy to parse, valid."""
    mapping = {
        f"n{i}": {
            "parent": f"n{i - 1}" if i else None,
            "children": [f"n{i + 1}"] if i + 1 < nodes else [],
            "message": {"author": {"role": "user" if i % 2 == 0 else "assistant"}, "content": {"parts": [f"message {i}"]}},
        }
        for i in range(nodes)
    }
    return msgspec.json.encode([{"title": "long", "current_node": f"n{nodes - 1}", "mapping": mapping}])


def test_a_cyclic_import_is_refused_and_nobody_else_waits_meanwhile(start_stack: Callable[..., Stack]) -> None:
    stack = start_stack()
    attacker, other = stack.client(stack.key("mallory")), stack.client(stack.key("olivia"))
    assert other.post("/api/v1/conversations", json={"title": "mine"}).status_code == 201
    latencies: list[float] = []
    stop = threading.Event()

    def meanwhile() -> None:
        with httpx.Client(base_url=stack.gateway, timeout=5) as anonymous:
            while not stop.is_set():
                started = time.monotonic()
                assert anonymous.get("/healthz").status_code == 200
                assert other.get("/api/v1/conversations").status_code == 200
                latencies.append(time.monotonic() - started)

    watcher = threading.Thread(target=meanwhile)
    watcher.start()
    try:
        refused = attacker.post("/api/v1/conversations/import", content=_cyclic_chatgpt_export())
        assert refused.status_code == 422, refused.text
        message = refused.json()["error"]["message"]
        assert "parents form a cycle" in message and re.search(r"at `\$\[0\]\.mapping\.[ab]\.parent`", message), message
        # A heavy import (20,000 nodes, ~3 MB) is parsed on a worker thread: the others keep being answered.
        heavy = attacker.post("/api/v1/conversations/import", content=_long_chatgpt_export(20_000))
        assert heavy.status_code == 201, heavy.text[:300]
        time.sleep(0.5)
    finally:
        stop.set()
        watcher.join()
    assert latencies and max(latencies) < 1.0, f"the slowest answer to another tenant took {max(latencies):.2f}s"
    assert other.get("/api/v1/conversations").json()["items"][0]["title"] == "mine"


def test_a_message_that_is_its_own_parent_never_reaches_the_store(start_stack: Callable[..., Stack]) -> None:
    stack = start_stack()
    http = stack.client(stack.key("mallory"))
    export = {
        "format": "chatbot-llm/conversation@1",
        "title": "self",
        "messages": [
            {"id": "m1", "parent_id": None, "role": "user", "content": "hi"},
            {"id": "m2", "parent_id": "m2", "role": "assistant", "content": "loop"},
        ],
    }
    refused = http.post("/api/v1/conversations/import", json=export)
    assert refused.status_code == 422 and "at `$.messages[1].parent_id`" in refused.json()["error"]["message"]
    duplicate = {**export, "messages": [export["messages"][0], export["messages"][0]]}
    assert http.post("/api/v1/conversations/import", json=duplicate).status_code == 422
    too_long = {**export, "messages": [{"id": "m1", "parent_id": None, "role": "user", "content": "x" * 200_001}]}
    refused = http.post("/api/v1/conversations/import", json=too_long)
    assert refused.status_code == 413 and "at `$.messages[0].content`" in refused.json()["error"]["message"]
    assert http.get("/api/v1/conversations").json()["items"] == []
    assert http.get("/api/v1/search", params={"q": "loop"}).status_code == 200


def test_json_nested_too_deeply_is_a_400_that_says_so(start_stack: Callable[..., Stack]) -> None:
    stack = start_stack()
    http = stack.client(stack.key("mallory"))
    deep = b"[" * 50_000 + b"]" * 50_000
    message = b'[{"role": "user", "content": "hi"}]'
    # Deep nesting where a body may hold any JSON (a tool's schema), and where it may not.
    bodies = {
        "/v1/chat/completions": b'{"model": "fake", "messages": '
        + message
        + b', "tools": [{"type": "function", "function": {"name": "f", "parameters": {"x": '
        + deep
        + b"}}}]}",
        "/v1/messages": b'{"model": "fake", "max_tokens": 5, "messages": ' + message + b', "metadata": {"x": ' + deep + b"}}",
        "/api/v1/conversations/import": deep,
        "/api/v1/conversations": b'{"title": ' + deep + b"}",
    }
    for path, body in bodies.items():
        response = http.post(path, content=body, headers={"content-type": "application/json"})
        assert response.status_code == 400, (path, response.status_code, response.text[:300])
        if path in ("/v1/chat/completions", "/api/v1/conversations/import"):
            assert "nested too deeply" in response.text, (path, response.text[:300])


def test_a_json_body_that_is_not_utf8_is_a_400_that_says_where_on_every_route_that_takes_one(
    start_stack: Callable[..., Stack],
) -> None:
    """JSON is UTF-8: a body with other bytes in it (a client's bug, or a probe) is the client's error, on every route
    that takes a body, those whose handler decodes it and those Litestar decodes alike."""
    stack = start_stack()
    admin = stack.admin
    spec = admin.get("/schema/openapi.json").json()
    without_body = {"/api/v1/conversations/x1/share", "/api/v1/requests/x1/cancel"}
    routes = [
        (method.upper(), re.sub(r"\{[^}]+\}", "x1", path))
        for path, operations in spec["paths"].items()
        for method in operations
        if method in ("post", "put", "patch")
    ]
    assert len(routes) >= 19, routes  # the OpenAI, Anthropic and native APIs, keys and knowledge bases
    for method, path in routes:
        # A name that is not UTF-8, first in the body: read before anything else is checked.
        response = admin.request(method, path, content=b'{"caf\xe9": 1}', headers={"content-type": "application/json"})
        if path in without_body:
            assert response.status_code == 404, (method, path, response.status_code, response.text[:300])
            continue
        # An import's file is read by the conversation service, which answers 422 for any file it cannot read.
        expected, prefix = (422, "the file is not JSON") if path.endswith("/import") else (400, "the request body is not valid JSON")
        assert response.status_code == expected, (method, path, response.status_code, response.text[:300])
        assert f"{prefix}: byte 0xe9 at offset 5 is not UTF-8" in response.text, (method, path, response.text[:300])
    # A value that is not UTF-8, where a handler decodes the body and where Litestar does.
    for path, body in {
        "/v1/chat/completions": b'{"model": "caf\xe9", "messages": []}',
        "/api/v1/conversations": b'{"title": "caf\xe9"}',
    }.items():
        response = admin.post(path, content=body, headers={"content-type": "application/json"})
        assert response.status_code == 400, (path, response.status_code, response.text[:300])
        offset = body.index(b"\xe9")
        assert f"byte 0xe9 at offset {offset} is not UTF-8" in response.text, (path, response.text[:300])


def test_a_name_longer_than_any_it_could_be_is_refused_without_being_echoed(start_stack: Callable[..., Stack]) -> None:
    """A model name no alias can have (the registry refuses aliases past 200 characters), or a response id longer than
    any the gateway makes, is refused by its length in a short error: not looked up, and not sent back whole, however
    much of the 4 MB body it takes."""
    stack = start_stack()
    http = stack.client(stack.key("mallory"))
    long = "m" * 100_000
    message = [{"role": "user", "content": "hi"}]
    for path, body, bound in [
        ("/v1/chat/completions", {"model": long, "messages": message}, "length <= 200 - at `$.model`"),
        ("/v1/messages", {"model": long, "max_tokens": 5, "messages": message}, "length <= 200 - at `$.model`"),
        ("/v1/responses", {"model": long, "input": "hi"}, "length <= 200 - at `$.model`"),
        ("/v1/embeddings", {"model": long, "input": "hi"}, "length <= 200 - at `$.model`"),
        ("/api/v1/conversations", {"model": long}, "length <= 200"),
        ("/v1/responses", {"model": "fake", "input": "hi", "previous_response_id": long}, "length <= 64 - at `$.previous_response_id`"),
    ]:
        response = http.post(path, json=body)
        assert response.status_code == 400, (path, response.status_code, response.text[:300])
        assert bound in response.text, (path, response.text[:300])
        assert len(response.content) < 1_000, (path, len(response.content))


def test_inputs_the_fuzzer_found_are_4xx(start_stack: Callable[..., Stack]) -> None:
    """Regressions: every input schemathesis ever found answering 500 stays here."""
    stack = start_stack()
    admin = stack.admin
    for path, params in [
        ("/api/v1/usage/export", {"to": "INF", "format": "csv", "owner": "00"}),
        ("/api/v1/usage", {"from": "-1e309"}),
        ("/api/v1/usage", {"to": "NaN"}),
        ("/api/v1/usage", {"from": "1e300"}),
        ("/api/v1/usage/export", {"from": "9999-12-31T23:59:59+00:00", "to": "1e20"}),
    ]:
        response = admin.get(path, params=params)
        assert response.status_code == 400, (path, params, response.status_code, response.text)
        assert response.json()["error"]["code"] == "invalid_time"


def test_no_page_of_the_api_runs_a_script_from_elsewhere(start_stack: Callable[..., Stack]) -> None:
    stack = start_stack()
    anonymous = stack.client()
    for path in (
        "/schema",
        "/schema/redoc",
        "/schema/swagger",
        "/schema/elements",
        "/schema/rapidoc",
        "/schema/scalar",
        "/schema/openapi.json",
    ):
        response = anonymous.get(path)
        assert not re.search(r"<script[^>]+src=[\"']?(https?:)?//", response.text), f"{path} loads a script from another origin"
        assert "default-src 'none'" in response.headers["content-security-policy"], path
    assert anonymous.get("/schema/openapi.json").json()["info"]["title"] == "Chatbot-LLM gateway"
    for response in (anonymous.get("/v1/models"), stack.admin.get("/v1/models"), anonymous.get("/healthz"), anonymous.get("/nothing")):
        assert "default-src 'none'" in response.headers["content-security-policy"], response.url


def test_readiness_details_are_for_admins_only(start_stack: Callable[..., Stack]) -> None:
    stack = start_stack()
    assert stack.client().get("/readyz").json() == {"status": "ready"}
    assert stack.client(stack.key("olivia")).get("/readyz").json() == {"status": "ready"}
    assert stack.admin.get("/readyz").json() == {"status": "ready", "redis": "up", "workers": 1}
