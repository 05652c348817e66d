"""One trace per chat turn: OpenTelemetry spans per hop, the W3C `traceparent` carried inside every message.

Spans are exported only when the standard variables ask for it (`OTEL_TRACES_EXPORTER=otlp`, or
an `OTEL_EXPORTER_OTLP_ENDPOINT` / `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`); otherwise the tracer
is OpenTelemetry's no-op one, no spans are made at all, and the `traceparent` still passes from hop
to hop unchanged.
"""

from __future__ import annotations

import os
import re
import secrets
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import structlog
from opentelemetry import trace
from opentelemetry.trace import Span, SpanKind
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

__all__ = [
    "SpanKind",
    "child_span",
    "configure_tracing",
    "span_in",
    "trace_id_of",
    "traceparent_of",
    "traceparent_or_new",
    "tracer",
    "tracing_on",
]

_TRACEPARENT = re.compile(r"^00-(?!0{32})[0-9a-f]{32}-(?!0{16})[0-9a-f]{16}-[0-9a-f]{2}$")
_PROPAGATOR = TraceContextTextMapPropagator()
log = structlog.get_logger()


def traceparent_or_new(header: str | None) -> str:
    """The caller's `traceparent` when it is valid W3C trace context, else the start of a new trace."""
    if header and _TRACEPARENT.match(header.strip()):
        return header.strip()
    return f"00-{secrets.token_hex(16)}-{secrets.token_hex(8)}-01"


def trace_id_of(traceparent: str | None) -> str | None:
    """The trace id inside a `traceparent` (for logs and the event table)."""
    return traceparent[3:35] if traceparent and _TRACEPARENT.match(traceparent) else None


def configure_tracing(service: str, environ: Mapping[str, str] | None = None) -> bool:
    """Install an exporting tracer provider when the `OTEL_*` variables ask for one; True if they did."""
    env = os.environ if environ is None else environ
    exporter = env.get("OTEL_TRACES_EXPORTER", "").strip().lower()
    endpoint = env.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") or env.get("OTEL_EXPORTER_OTLP_ENDPOINT")
    if env.get("OTEL_SDK_DISABLED", "").lower() == "true" or exporter == "none" or (not exporter and not endpoint):
        return False
    from opentelemetry.sdk.resources import SERVICE_NAME, Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter, SpanExporter

    span_exporter: SpanExporter
    if exporter == "console":
        span_exporter = ConsoleSpanExporter()
    elif exporter in ("", "otlp"):
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        span_exporter = OTLPSpanExporter()  # reads the endpoint, headers and timeout from OTEL_EXPORTER_OTLP_*
    else:
        log.warning("tracing.unknown_exporter", exporter=exporter, supported="otlp, console, none")
        return False
    resource = Resource.create({SERVICE_NAME: env.get("OTEL_SERVICE_NAME") or f"chatbot-{service}"})
    provider = TracerProvider(resource=resource)
    provider.add_span_processor(BatchSpanProcessor(span_exporter))
    trace.set_tracer_provider(provider)
    log.info("tracing.exporting", exporter=exporter or "otlp", service=service)
    return True


def tracer(name: str) -> trace.Tracer:
    """A tracer that follows whichever provider is installed, even one installed after this call."""
    return trace.get_tracer(name)


def tracing_on() -> bool:
    """Whether a tracer provider is installed; without one, spans would be no-op ones, not worth making on the hot path."""
    return not isinstance(trace.get_tracer_provider(), trace.ProxyTracerProvider)


@contextmanager
def span_in(
    traceparent: str | None, on: trace.Tracer, name: str, kind: SpanKind, attributes: Mapping[str, Any] | None = None
) -> Iterator[Span]:
    """A span, current for the block, whose parent is the span a message's `traceparent` names (an invalid one without a tracer)."""
    if not tracing_on():
        yield trace.INVALID_SPAN
        return
    context = _PROPAGATOR.extract({"traceparent": traceparent}) if traceparent else None
    with on.start_as_current_span(name, context=context, kind=kind, attributes=attributes) as span:
        yield span


@contextmanager
def child_span(on: trace.Tracer, name: str, kind: SpanKind, attributes: Mapping[str, Any] | None = None) -> Iterator[Span]:
    """A span under the current one, current for the block (an invalid one without a tracer)."""
    if not tracing_on():
        yield trace.INVALID_SPAN
        return
    with on.start_as_current_span(name, kind=kind, attributes=attributes) as span:
        yield span


def traceparent_of(span: Span, fallback: str | None) -> str:
    """The `traceparent` naming `span`, to carry in the next message; without a tracer, the one that came in."""
    context = span.get_span_context()
    if not context.is_valid:
        return traceparent_or_new(fallback)
    return f"00-{context.trace_id:032x}-{context.span_id:016x}-{context.trace_flags:02x}"
