"""The gateway's Prometheus metrics, served on a port of their own (`CHATBOT_GATEWAY_METRICS_PORT`). Labels are low-cardinality: route templates, never ids or keys."""

from __future__ import annotations

from typing import Any

from litestar.types import HTTPResponseStartEvent, Scope
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram


class GatewayMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter("chatbot_http_requests", "HTTP responses, by route and status", ["route", "method", "status"], registry=r)
        self.refusals = Counter("chatbot_admissions_refused", "Requests refused before generating, by reason", ["reason"], registry=r)
        self.streams = Gauge("chatbot_streams_in_flight", "Event streams this gateway is relaying to clients", registry=r)
        self.time_to_first_token = Histogram(
            "chatbot_gateway_time_to_first_token_seconds",
            "Time from a request's arrival to its first token, as the gateway relays it",
            buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
            registry=r,
        )
        self.overhead = Histogram(
            "chatbot_platform_overhead_seconds",
            "Time the platform took before the provider was called (gateway, queue, worker)",
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 5),
            registry=r,
        )

    def count_response(self, message: HTTPResponseStartEvent, scope: Scope) -> None:
        """One count per response (given its `http.response.start` message), by its route template."""
        handler: Any = scope.get("route_handler")
        route = next(iter(handler.paths)) if handler is not None and getattr(handler, "paths", None) else "unmatched"
        self.requests.labels(route, scope.get("method", ""), str(message["status"])).inc()
