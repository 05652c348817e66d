"""The native event protocol: every event with `id:` = its Redis stream entry id, so any replica can resume it."""

from __future__ import annotations

from collections.abc import AsyncIterator

import msgspec

from chatbot_contracts import AnyStreamEvent, Usage, json_encoder

from ..follower import KEEPALIVE, Batch

RETRY_MS = 3000
SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


class _UsageData(msgspec.Struct, kw_only=True):
    type: str = "usage"
    input_tokens: int
    output_tokens: int
    cached_tokens: int
    cost_usd: float
    estimated: bool


def data_of(event: AnyStreamEvent) -> bytes:
    """The JSON `data:` of an event: its fields and its `type` (usage flattened)."""
    if isinstance(event, Usage):
        u = event.usage
        return json_encoder.encode(
            _UsageData(
                input_tokens=u.input_tokens,
                output_tokens=u.output_tokens,
                cached_tokens=u.cached_tokens,
                cost_usd=u.cost_usd,
                estimated=u.estimated,
            )
        )
    return json_encoder.encode(event)


def frame(entry_id: bytes, event: AnyStreamEvent) -> bytes:
    kind = type(event).__struct_config__.tag
    head = b"id: " + entry_id + b"\n" if entry_id else b""
    return head + b"event: " + str(kind).encode() + b"\ndata: " + data_of(event) + b"\n\n"


async def native_sse(batches: AsyncIterator[Batch]) -> AsyncIterator[bytes]:
    """Server-sent events from the request stream's batches, one HTTP write a batch.

    The reconnection hint (`retry:`) rides on the first event: a block of its own would be an
    empty event to some clients.
    """
    prefix = f"retry: {RETRY_MS}\n".encode()
    async for batch in batches:
        if batch is KEEPALIVE:
            yield b": keepalive\n\n"
            continue
        yield prefix + b"".join(frame(entry_id, event) for entry_id, event in batch)
        prefix = b""
