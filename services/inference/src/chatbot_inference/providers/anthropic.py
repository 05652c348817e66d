"""Anthropic's Messages API, streamed: named SSE events, the system prompt top-level."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Mapping

import aiohttp
import msgspec

from chatbot_contracts import ChatMessage, ChatRequest, Delta, Done, ErrorCode, FinishReason, ModelSpec, TokenUsage, json_encoder

from .base import ProviderError, ProviderEvent
from .http import api_key, drain, streaming_post

DEFAULT_BASE_URL = "https://api.anthropic.com"
API_VERSION = "2023-06-01"


class _Message(msgspec.Struct):
    role: str
    content: str


class _Body(msgspec.Struct, kw_only=True, omit_defaults=True):
    model: str
    max_tokens: int
    messages: list[_Message]
    stream: bool
    system: str | None = None
    temperature: float | None = None
    top_p: float | None = None
    stop_sequences: list[str] | None = None


class _Usage(msgspec.Struct):
    input_tokens: int | None = None
    output_tokens: int | None = None
    cache_creation_input_tokens: int | None = None
    cache_read_input_tokens: int | None = None


class _MessageStart(msgspec.Struct):
    usage: _Usage = msgspec.field(default_factory=_Usage)


class _Delta(msgspec.Struct):
    type: str = ""
    text: str = ""
    stop_reason: str | None = None


class _Error(msgspec.Struct):
    type: str = ""
    message: str = ""


class Event(msgspec.Struct):
    """One streamed event; which fields are set depends on its `type`."""

    type: str
    message: _MessageStart | None = None
    delta: _Delta | None = None
    usage: _Usage | None = None
    error: _Error | None = None


_event_decoder = msgspec.json.Decoder(Event)

_FINISH: dict[str, FinishReason] = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "pause_turn": "stop",
    "max_tokens": "length",
    "model_context_window_exceeded": "length",
    "tool_use": "tool_calls",
    "refusal": "content_filter",
}
_ERRORS: dict[str, ErrorCode] = {
    "invalid_request_error": "bad_request",
    "authentication_error": "authentication",
    "permission_error": "permission",
    "not_found_error": "bad_request",
    "request_too_large": "bad_request",
    "rate_limit_error": "rate_limited",
    "api_error": "upstream_error",
    "overloaded_error": "overloaded",
    "timeout_error": "timeout",
}


class EventReader:
    """Folds one response's events into text, a stop reason and usage.

    Input and cache usage come from `message_start`; output usage from `message_delta` is
    cumulative, so it replaces what was known, never adds to it.
    """

    def __init__(self) -> None:
        self.input_tokens = 0
        self.cached_tokens = 0
        self.output_tokens = 0
        self.finish_reason: FinishReason | None = None
        self.stopped = False

    def read(self, data: str) -> str | None:
        try:
            event = _event_decoder.decode(data)
        except msgspec.MsgspecError as exc:
            raise ProviderError("upstream_error", f"anthropic: malformed event ({exc}): {data[:200]!r}", upstream=True) from exc
        match event.type:
            case "content_block_delta" if event.delta is not None and event.delta.type == "text_delta":
                return event.delta.text or None
            case "message_start" if event.message is not None:
                self._usage(event.message.usage)
            case "message_delta":
                if event.delta is not None and event.delta.stop_reason:
                    self.finish_reason = _FINISH.get(event.delta.stop_reason, "stop")
                if event.usage is not None:
                    self._usage(event.usage)
            case "message_stop":
                self.stopped = True
            case "error":
                error = event.error or _Error()
                raise ProviderError(_ERRORS.get(error.type, "upstream_error"), f"anthropic: {error.type}: {error.message}", upstream=True)
        return None

    def _usage(self, usage: _Usage) -> None:
        if usage.input_tokens is not None:
            cached = usage.cache_read_input_tokens or 0
            self.input_tokens = usage.input_tokens + (usage.cache_creation_input_tokens or 0) + cached
            self.cached_tokens = cached
        if usage.output_tokens is not None:
            self.output_tokens = usage.output_tokens

    def usage(self) -> TokenUsage:
        return TokenUsage(input_tokens=self.input_tokens, output_tokens=self.output_tokens, cached_tokens=self.cached_tokens)


def _turns(messages: list[ChatMessage]) -> tuple[str | None, list[_Message]]:
    """The system prompt and the turns, consecutive turns of one role joined (Anthropic wants them alternating)."""
    system = "\n\n".join(m.content for m in messages if m.role == "system") or None
    turns: list[_Message] = []
    for message in messages:
        if message.role == "system":
            continue
        if message.role not in ("user", "assistant"):
            raise ProviderError("bad_request", f"anthropic: a `{message.role}` message cannot be sent to this provider")
        if turns and turns[-1].role == message.role:
            turns[-1] = _Message(message.role, turns[-1].content + "\n\n" + message.content)
        else:
            turns.append(_Message(message.role, message.content))
    return system, turns


class AnthropicProvider:
    """Streams `/v1/messages`."""

    name = "anthropic"

    def __init__(self, http: aiohttp.ClientSession, environ: Mapping[str, str] = os.environ) -> None:
        self._http = http
        self._environ = environ

    def _request(self, request: ChatRequest, spec: ModelSpec) -> tuple[str, dict[str, str], bytes]:
        url = (spec.base_url or DEFAULT_BASE_URL).rstrip("/") + "/v1/messages"
        headers = {"content-type": "application/json", "accept": "text/event-stream", "anthropic-version": API_VERSION}
        if key := api_key(self._environ, spec.api_key_env, "anthropic"):
            headers["x-api-key"] = key
        system, turns = _turns(request.messages)
        params = request.params
        body = _Body(
            model=spec.upstream_model,
            max_tokens=min(params.max_tokens or spec.max_output_tokens, spec.max_output_tokens),
            messages=turns,
            stream=True,
            system=system,
            temperature=params.temperature,
            top_p=params.top_p,
            stop_sequences=params.stop,
        )
        return url, headers, json_encoder.encode(body)

    async def stream(self, request: ChatRequest, spec: ModelSpec) -> AsyncIterator[ProviderEvent]:
        url, headers, body = self._request(request, spec)
        reader = EventReader()
        async with streaming_post(self._http, url, body=body, headers=headers, provider="anthropic") as response:
            events = response.events()
            async for data in events:
                if data and (text := reader.read(data)):
                    yield Delta(text=text)
                if reader.stopped:
                    await drain(events)
                    break
        if not reader.stopped:
            raise ProviderError("network", "anthropic: the connection closed before message_stop")
        yield reader.usage()
        yield Done(reason=reader.finish_reason or "stop")
