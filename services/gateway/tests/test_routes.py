"""Health, readiness and the model list."""

from __future__ import annotations

import time
from collections.abc import Callable

import redis.asyncio as aioredis
from litestar import Litestar
from litestar.testing import AsyncTestClient
from prometheus_client import generate_latest

from chatbot_contracts import Keys


async def test_models_lists_the_registry_aliases(client: AsyncTestClient[Litestar]) -> None:
    response = await client.get("/v1/models")
    assert response.status_code == 200
    assert response.json() == {
        "object": "list",
        "data": [{"id": "fast", "object": "model", "created": 0, "owned_by": "openai", "mode": "chat"}],
    }


async def test_health_needs_no_key(app: Litestar) -> None:
    async with AsyncTestClient(app=app) as anonymous:
        assert (await anonymous.get("/healthz")).json() == {"status": "ok"}


async def test_ready_only_with_a_live_worker(app: Litestar, redis: aioredis.Redis, namespace: str) -> None:
    admin = {"Authorization": "Bearer sk-test-admin-0123456789abcdef"}
    async with AsyncTestClient(app=app) as anonymous:
        response = await anonymous.get("/readyz", headers=admin)
        assert response.status_code == 503 and response.json()["error"] == "no inference worker is alive"
        assert (await anonymous.get("/readyz")).json() == {"status": "not_ready"}, "why: to the admin only"
        await redis.zadd(Keys(namespace).workers, {"stale": time.time() - 60})
        assert (await anonymous.get("/readyz")).status_code == 503
        await redis.zadd(Keys(namespace).workers, {"fresh": time.time()})
        response = await anonymous.get("/readyz", headers=admin)
        assert response.status_code == 200 and response.json()["workers"] == 1


async def test_ready_without_workers_when_told(make_app: Callable[..., Litestar], redis_url: str) -> None:
    """Workers scaled to zero (KEDA) must not take the gateway out of service: a request is what wakes them."""
    async with AsyncTestClient(app=make_app(redis_url, CHATBOT_READY_WITHOUT_WORKERS="true")) as admin:
        admin.headers["Authorization"] = "Bearer sk-test-admin-0123456789abcdef"
        response = await admin.get("/readyz")
        assert response.status_code == 200 and response.json()["workers"] == 0


async def test_redis_down_means_503_within_a_second(make_app: Callable[..., Litestar]) -> None:
    from chatbot_devtools.redis_server import free_port

    app = make_app(f"redis://127.0.0.1:{free_port()}/0")
    async with AsyncTestClient(app=app) as client:
        client.headers["Authorization"] = "Bearer sk-test-admin-0123456789abcdef"
        started = time.monotonic()
        ready = await client.get("/readyz")
        assert ready.status_code == 503 and ready.json()["redis"] == "down"
        chat = await client.post("/v1/chat/completions", json={"model": "fast", "messages": [{"role": "user", "content": "Hi"}]})
        assert chat.status_code == 503
        assert chat.json()["error"]["code"] == "redis_unavailable"
        assert chat.headers["retry-after"] == "1"
        assert time.monotonic() - started < 2.0


async def test_the_openapi_schema_documents_the_routes(client: AsyncTestClient[Litestar]) -> None:
    schema = (await client.get("/schema/openapi.json")).json()
    assert {"/v1/chat/completions", "/v1/models", "/healthz", "/readyz"} <= set(schema["paths"])


async def test_every_response_carries_the_security_headers(client: AsyncTestClient[Litestar]) -> None:
    for response in (await client.get("/healthz"), await client.get("/v1/models"), await client.get("/v1/nothing")):
        assert response.headers["x-content-type-options"] == "nosniff"
        assert response.headers["x-frame-options"] == "DENY" and response.headers["referrer-policy"] == "no-referrer"


async def test_cors_is_closed_by_default_and_opens_to_configured_origins(make_app: Callable[..., Litestar], redis_url: str) -> None:
    preflight = {"origin": "https://app.example", "access-control-request-method": "POST"}
    async with AsyncTestClient(app=make_app(redis_url)) as closed:
        assert "access-control-allow-origin" not in (await closed.options("/v1/chat/completions", headers=preflight)).headers
    async with AsyncTestClient(app=make_app(redis_url, CHATBOT_CORS_ORIGINS="https://app.example")) as open_:
        response = await open_.options("/v1/chat/completions", headers=preflight)
        assert response.headers["access-control-allow-origin"] == "https://app.example"


async def test_the_asyncapi_document_describes_the_streams_from_the_contracts(app: Litestar) -> None:
    async with AsyncTestClient(app=app) as anonymous:
        document = (await anonymous.get("/schema/asyncapi.json")).json()
    assert document["asyncapi"] == "3.0.0"
    addresses = {channel["address"] for channel in document["channels"].values()}
    assert addresses == {"chat.requests", "chat.stream.{request_id}", "inference.events", "chat.requests.dead"}
    schemas = document["components"]["schemas"]
    assert {"ChatRequest", "Delta", "Done", "Completed", "Queued"} <= set(schemas)
    assert "request_id" in schemas["ChatRequest"]["required"]


async def test_metrics_count_responses_by_route_and_refusals_by_reason(app: Litestar, client: AsyncTestClient[Litestar]) -> None:
    await client.get("/v1/models")
    await client.get("/v1/nothing-here")
    await client.post("/v1/chat/completions", json={"model": "nope", "messages": [{"role": "user", "content": "a"}]})
    text = generate_latest(app.state.metrics.registry).decode()
    assert (await client.get("/metrics")).status_code == 404, "metrics are served on their own port, not the API's"
    assert 'chatbot_http_requests_total{method="GET",route="/v1/models",status="200"} 1.0' in text
    assert 'chatbot_http_requests_total{method="GET",route="unmatched",status="404"} 1.0' in text
    assert 'chatbot_http_requests_total{method="POST",route="/v1/chat/completions",status="404"} 1.0' in text
    assert "request_id" not in text and "sk-" not in text, "no high-cardinality or secret labels"
