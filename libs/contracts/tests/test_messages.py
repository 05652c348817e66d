"""The wire contracts: round trips, tagged decoding, schema evolution."""

from __future__ import annotations

import time
import uuid

import msgspec
import pytest

from chatbot_contracts import (
    ChatMessage,
    ChatRequest,
    Completed,
    Delta,
    Done,
    Error,
    GenerationParams,
    Keys,
    Queued,
    Restart,
    Started,
    TokenUsage,
    Usage,
    chat_request_decoder,
    encode,
    inference_event_decoder,
    new_request_id,
    stream_event_decoder,
)


def request(**overrides: object) -> ChatRequest:
    fields: dict[str, object] = {
        "request_id": "r1",
        "model": "fast",
        "messages": [ChatMessage(role="system", content="Be brief."), ChatMessage(role="user", content="Hi")],
        "params": GenerationParams(temperature=0.2, max_tokens=64, stop=["\n\n"]),
        "owner": "team-a",
        "key_id": "k1",
        "enqueued_at": 1700000000.5,
        "deadline": 1700000600.5,
        "traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
    }
    fields.update(overrides)
    return ChatRequest(**fields)  # type: ignore[arg-type]


def test_chat_request_round_trips() -> None:
    original = request(attempt=2)
    assert chat_request_decoder.decode(encode(original)) == original


@pytest.mark.parametrize(
    "event",
    [
        Started(model="fast", provider="openai", upstream_model="gpt-4o-mini"),
        Delta(text="Hel"),
        Usage(usage=TokenUsage(input_tokens=3, output_tokens=5, cost_usd=0.001)),
        Restart(attempt=2),
        Error(code="rate_limited", message="slow down", retry_after=2.0),
        Done(reason="stop"),
    ],
)
def test_stream_events_decode_to_their_own_type(event: object) -> None:
    decoded = stream_event_decoder.decode(encode(event))
    assert type(decoded) is type(event)
    assert decoded == event


def test_stream_events_carry_their_tag() -> None:
    assert msgspec.json.decode(encode(Delta(text="x"))) == {"type": "delta", "text": "x"}


def test_inference_events_decode_by_tag() -> None:
    event = Completed(request_id="r1", model="fast", at=1.0, text="Hello", finish_reason="stop", usage=TokenUsage(output_tokens=1))
    assert inference_event_decoder.decode(encode(event)) == event
    queued = inference_event_decoder.decode(b'{"type":"queued","request_id":"r2","model":"m","at":2.0}')
    assert isinstance(queued, Queued) and queued.request_id == "r2"


def test_unknown_fields_from_newer_producers_are_ignored() -> None:
    newer = b'{"type":"delta","text":"hi","logprob":-0.1,"future":{"x":1}}'
    assert stream_event_decoder.decode(newer) == Delta(text="hi")
    wire = msgspec.json.decode(encode(request()))
    wire["priority"] = "high"
    assert chat_request_decoder.decode(msgspec.json.encode(wire)) == request()


def test_older_messages_take_defaults_for_new_fields() -> None:
    minimal = b'{"request_id":"r","model":"m","messages":[],"owner":"o","key_id":"k","enqueued_at":1,"deadline":2}'
    decoded = chat_request_decoder.decode(minimal)
    assert decoded.attempt == 1 and decoded.params == GenerationParams() and decoded.traceparent is None


def test_an_unknown_event_type_is_refused_with_the_path() -> None:
    with pytest.raises(msgspec.ValidationError, match=r"Invalid value 'telepathy' - at `\$.type`"):
        stream_event_decoder.decode(b'{"type":"telepathy"}')


def test_contracts_are_frozen() -> None:
    with pytest.raises(AttributeError):
        Delta(text="a").text = "b"  # type: ignore[misc]


def test_keys_of_one_request_share_a_cluster_hash_tag() -> None:
    keys = Keys("ns:")
    assert keys.request_stream("abc") == "ns:chat.stream.{abc}"
    assert keys.cancel_flag("abc") == "ns:chat.cancel.{abc}"
    assert keys.chat_requests == "ns:chat.requests"
    assert Keys().inference_events == "inference.events"


def test_a_valid_traceparent_is_kept_and_a_bad_one_replaced() -> None:
    from chatbot_contracts.tracing import traceparent_or_new

    valid = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    assert traceparent_or_new(valid) == valid
    for bad in (None, "", "garbage", "00-00000000000000000000000000000000-b7ad6b7169203331-01"):
        fresh = traceparent_or_new(bad)
        assert fresh != bad and traceparent_or_new(fresh) == fresh


def test_without_a_tracer_no_span_is_made_and_the_traceparent_passes_unchanged(monkeypatch: pytest.MonkeyPatch) -> None:
    from opentelemetry import trace

    from chatbot_contracts.tracing import SpanKind, child_span, span_in, traceparent_of, tracer, tracing_on

    # As in a process that installed none (another test of this session may have installed one).
    monkeypatch.setattr(trace, "get_tracer_provider", trace.ProxyTracerProvider)
    assert not tracing_on()
    incoming = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    with span_in(incoming, tracer("t"), "consume", SpanKind.CONSUMER) as span, child_span(tracer("t"), "call", SpanKind.CLIENT) as child:
        assert not span.is_recording() and not child.get_span_context().is_valid
        assert traceparent_of(child, incoming) == incoming
        assert traceparent_of(span, None) != traceparent_of(span, None), "without one coming in, each hop starts a new trace"


def test_budget_periods_are_named_by_their_utc_calendar() -> None:
    from datetime import UTC, datetime

    from chatbot_contracts.keys import period_label

    moment = datetime(2026, 11, 24, 23, 59, tzinfo=UTC)
    assert [period_label(p, moment) for p in ("day", "week", "month")] == ["2026-11-24", "2026-W48", "2026-11"]


def test_a_settled_heap_is_out_of_the_collectors_sight() -> None:
    """What the services do once built: the start-up heap frozen, young collections less often (in a process of its own)."""
    import subprocess
    import sys

    probe = "import gc; from chatbot_contracts.heap import settle_heap; settle_heap(); print(gc.get_freeze_count(), gc.get_threshold()[0])"
    frozen, young = map(int, subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout.split())
    assert frozen > 1000 and young == 10_000


def test_request_ids_are_unique_uuid7s_in_the_order_they_were_made() -> None:
    made = [new_request_id() for _ in range(2000)]
    assert len(set(made)) == len(made) and made == sorted(made), "unique, and each after the one before (the log's index)"
    first = uuid.UUID(made[0])
    assert first.version == 7 and first.hex == made[0], "a UUIDv7 in 32 hex digits, as the ids before were UUID4s"
    assert abs(int(made[0][:12], 16) / 1000 - time.time()) < 60, "its first 48 bits are the time in milliseconds"
