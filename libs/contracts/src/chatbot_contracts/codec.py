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
