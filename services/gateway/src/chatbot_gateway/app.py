"""The gateway's Litestar application."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import msgspec
import structlog
from litestar import Litestar
from litestar.config.cors import CORSConfig
from litestar.datastructures import State
from litestar.enums import ScopeType
from litestar.middleware import DefineMiddleware
from litestar.openapi import OpenAPIConfig
from litestar.openapi.plugins import JsonRenderPlugin
from litestar.openapi.spec import Components, SecurityScheme
from litestar.types import ASGIApp, Message, Receive, Scope, Send

from chatbot_contracts import Registry
from chatbot_contracts.redis import connect
from chatbot_contracts.registry import RegistryWatcher
from chatbot_contracts.signing import Signer

from .anthropic import messages
from .apidocs import asyncapi_document
from .apikeys import ROUTES as KEY_ROUTES
from .apikeys import KeyStore
from .auth import AuthFailures, KeyAuthMiddleware
from .cache import ROUTES as CACHE_ROUTES
from .errors import EXCEPTION_HANDLERS, GatewayRequest, document_errors
from .health import healthz, readyz
from .images import ImageRules
from .metrics import GatewayMetrics
from .native import ROUTES as NATIVE_ROUTES
from .native import ServiceClient
from .openai import RESPONSES_ROUTES, chat_completions, create_embeddings, list_models
from .ratelimit import KeyLimits
from .relay import Relay
from .settings import Settings
from .usage import ROUTES as USAGE_ROUTES
from .web import web_routes

log = structlog.get_logger()


SECURITY_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cross-Origin-Resource-Policy": "same-origin",
}
EXPOSED_HEADERS = [
    "x-request-id",
    "x-chatbot-overhead-ms",
    "x-chatbot-deployment",
    "retry-after",
    "x-ratelimit-remaining-requests",
    "x-ratelimit-remaining-tokens",
]


_SECURITY_HEADER_LIST = [(name.lower().encode(), value.encode()) for name, value in SECURITY_HEADERS.items()]
API_CONTENT_SECURITY_POLICY = (
    b"content-security-policy",
    b"default-src 'none'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'",
)
"""For every response that sets none of its own (the API's JSON and streams): nothing may load or run from it.
The web UI's pages set theirs (`web.py`)."""


def on_response_start(metrics: GatewayMetrics) -> Callable[[Message, Scope], Awaitable[None]]:
    """The `before_send` hook: on every response (errors, unmatched routes and streams included) the same
    hardening headers, a Content-Security-Policy unless the response has its own, and its count. One hook, as it
    runs for every message: each chunk of every stream."""

    async def hook(message: Message, scope: Scope) -> None:
        if message["type"] == "http.response.start":
            headers = list(message.get("headers", []))
            if not any(name.lower() == b"content-security-policy" for name, _ in headers):
                headers.append(API_CONTENT_SECURITY_POLICY)
            message["headers"] = [*headers, *_SECURITY_HEADER_LIST]
            metrics.count_response(message, scope)

    return hook


def request_limits(max_url_bytes: int, max_header_bytes: int) -> Callable[[ASGIApp], ASGIApp]:
    """ASGI middleware: a URL or headers past their limit get 414 or 431 before anything reads them."""

    def middleware(app: ASGIApp) -> ASGIApp:
        async def limited(scope: Scope, receive: Receive, send: Send) -> None:
            if scope["type"] == ScopeType.HTTP:
                url_bytes = len(scope.get("raw_path") or scope["path"].encode()) + len(scope.get("query_string", b""))
                header_bytes = sum(len(name) + len(value) for name, value in scope["headers"])
                problem = None
                if url_bytes > max_url_bytes:
                    problem = (414, f"the URL has {url_bytes} bytes; at most {max_url_bytes} are allowed")
                elif header_bytes > max_header_bytes:
                    problem = (431, f"the headers have {header_bytes} bytes; at most {max_header_bytes} are allowed")
                if problem is not None:
                    body = msgspec.json.encode(
                        {"error": {"message": problem[1], "type": "invalid_request_error", "code": "request_too_large", "param": None}}
                    )
                    await send({"type": "http.response.start", "status": problem[0], "headers": [(b"content-type", b"application/json")]})
                    await send({"type": "http.response.body", "body": body, "more_body": False})
                    return
            await app(scope, receive, send)

        return limited

    return middleware


def create_app(settings: Settings, registry: Registry, web_dist: Path | None = None) -> Litestar:
    """The gateway for these settings and this model registry."""

    @asynccontextmanager
    async def redis_lifespan(app: Litestar) -> AsyncIterator[None]:
        redis = connect(settings.redis)
        app.state.redis = redis
        cluster_reader = connect(settings.redis) if settings.redis.cluster() else None
        app.state.relay = Relay(redis, app.state.redis_keys, settings.chat, metrics, cluster_reader=cluster_reader)
        app.state.limits = KeyLimits(redis, app.state.redis_keys)
        app.state.auth_failures = AuthFailures(redis, app.state.redis_keys, settings.auth.auth_failures_per_minute)
        app.state.conversations = ServiceClient(
            settings.chat.conversation_url,
            "conversation service",
            "stored conversations are unavailable, OpenAI- and Anthropic-compatible chat still works",
            "conversation_service_unavailable",
            signer,
        )
        app.state.usage = ServiceClient(
            settings.chat.log_collector_url,
            "log collector",
            "usage and request logs are unavailable, chat still works",
            "log_collector_unavailable",
            signer,
        )
        await key_store.migrate()
        watching = None
        if watch_registry:
            watcher = RegistryWatcher(registry.source, lambda new: setattr(app.state, "registry", new), settings.chat.registry_poll_s)
            watcher.listen_for_sighup()
            watching = asyncio.create_task(watcher.run())
        try:
            yield
        finally:
            if watching is not None:
                watching.cancel()
            await key_store.close()
            await app.state.conversations.close()
            await app.state.usage.close()
            await app.state.relay.close()
            await redis.aclose()

    key_store = KeyStore(settings.auth.admin_key, settings.auth.database_url)
    signer = Signer(settings.signing.internal_secret)
    watch_registry = Path(registry.source).is_file()
    """A registry read from a file is reloaded when the file changes; one made in memory (tests) is not."""
    metrics = GatewayMetrics()
    origins = [origin.strip() for origin in settings.server.cors_origins.split(",") if origin.strip()]
    route_handlers: list[object] = [
        healthz,
        readyz,
        asyncapi_document,
        chat_completions,
        list_models,
        *RESPONSES_ROUTES,
        create_embeddings,
        messages,
        *NATIVE_ROUTES,
        *KEY_ROUTES,
        *USAGE_ROUTES,
        *CACHE_ROUTES,
    ]
    route_handlers = [document_errors(handler) for handler in route_handlers]
    if web_dist is not None:
        route_handlers.extend(web_routes(web_dist))

    return Litestar(
        route_handlers=route_handlers,  # type: ignore[arg-type]
        state=State(
            {
                "settings": settings,
                "registry": registry,
                "redis_keys": settings.redis.keys(),
                "images": ImageRules(settings.chat.max_image_bytes, settings.chat.max_images),
                "key_store": key_store,
                "metrics": metrics,
            }
        ),
        lifespan=[redis_lifespan],
        middleware=[
            request_limits(settings.server.max_url_bytes, settings.server.max_header_bytes),
            DefineMiddleware(KeyAuthMiddleware, exclude="^/schema"),
        ],
        before_send=[on_response_start(metrics)],
        cors_config=CORSConfig(allow_origins=origins, allow_headers=["*"], expose_headers=EXPOSED_HEADERS) if origins else None,
        logging_config=None,
        exception_handlers=EXCEPTION_HANDLERS,
        request_class=GatewayRequest,
        request_max_body_size=settings.server.max_body_bytes,
        openapi_config=OpenAPIConfig(
            title="Chatbot-LLM gateway",
            version="0.1.0",
            path="/schema",
            # The spec only: the docs pages (Redoc, Swagger, ...) would load scripts from CDNs onto the origin
            # where the web UI keeps API keys.
            render_plugins=[JsonRenderPlugin()],
            components=Components(security_schemes={"bearer": SecurityScheme(type="http", scheme="bearer", description="An API key")}),
            security=[{"bearer": []}],
        ),
        debug=False,
    )
