"""Encoders and decoders, built once per process and reused."""

from __future__ import annotations

import msgspec

from .chat import ChatRequest
from .events import AnyInferenceEvent, AnyStreamEvent

json_encoder = msgspec.json.Encoder()
"""Encodes any contract Struct to JSON bytes."""

chat_request_decoder = msgspec.json.Decoder(ChatRequest)
stream_event_decoder = msgspec.json.Decoder(AnyStreamEvent)
inference_event_decoder = msgspec.json.Decoder(AnyInferenceEvent)

encode = json_encoder.encode


def not_utf8(raw: bytes) -> str:
    """Where `raw` stops being UTF-8, in words, for the error that refuses it.

    msgspec refuses a string that is not UTF-8 with Python's `UnicodeDecodeError`, not one of its own
    `DecodeError`s, and that error's position is within the string, not the body.
    """
    try:
        raw.decode()
    except UnicodeDecodeError as exc:
        return f"byte 0x{raw[exc.start]:02x} at offset {exc.start} is not UTF-8"
    return "it is not UTF-8"
