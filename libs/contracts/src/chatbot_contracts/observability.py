"""Logging set up the same way in every service: structlog, JSON when not on a terminal."""

from __future__ import annotations

import logging
import sys

import msgspec
import structlog
from opentelemetry import trace
from prometheus_client import CollectorRegistry, start_http_server
from structlog.typing import EventDict, WrappedLogger


def add_trace_id(_: WrappedLogger, __: str, event: EventDict) -> EventDict:
    """Put the current trace's id on every line logged inside a span (the turn's, across services)."""
    context = trace.get_current_span().get_span_context()
    if context.is_valid and "trace_id" not in event:
        event["trace_id"] = f"{context.trace_id:032x}"
    return event


def configure_logging(service: str, level: str = "INFO") -> None:
    """Route structlog and the standard library through one renderer, bound to `service`."""
    renderer: structlog.typing.Processor = structlog.dev.ConsoleRenderer() if sys.stderr.isatty() else structlog.processors.JSONRenderer()
    shared: list[structlog.typing.Processor] = [
        structlog.contextvars.merge_contextvars,
        add_trace_id,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    structlog.configure(
        processors=[*shared, structlog.processors.format_exc_info, renderer],
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelName(level.upper())),
        logger_factory=structlog.PrintLoggerFactory(sys.stderr),
        cache_logger_on_first_use=True,
    )
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=shared, processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, renderer]
        )
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    structlog.contextvars.bind_contextvars(service=service)


class MetricsSettings(msgspec.Struct, kw_only=True, frozen=True):
    """Where a service's metrics port listens."""

    metrics_host: str = "127.0.0.1"
    """`CHATBOT_METRICS_HOST`: the address of the metrics port (`0.0.0.0` in containers)."""


def serve_metrics(registry: CollectorRegistry, host: str, port: int) -> None:
    """Serve Prometheus `/metrics` for `registry` on a port of its own (0: nowhere), apart from any API:
    a network policy can then open metrics to the monitoring namespace and nothing else. A port already taken
    costs the metrics, not the service: it is logged and the service runs on."""
    if not port:
        return
    try:
        start_http_server(port, addr=host, registry=registry)
    except OSError as exc:
        structlog.get_logger().error("metrics.unavailable", host=host, port=port, error=str(exc))
