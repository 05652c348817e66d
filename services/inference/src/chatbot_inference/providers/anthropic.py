"""Anthropic's Messages API, streamed: named SSE events, the system prompt top-level."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Mapping
from typing import Any

import aiohttp
import msgspec

from chatbot_contracts import (
    ChatMessage,
    ChatRequest,
    Delta,
    Done,
    ErrorCode,
    FinishReason,
    GenerationParams,
    ModelSpec,
    Thinking,
    TokenUsage,
    ToolCallDelta,
    json_encoder,
)

from .base import ProviderError, ProviderEvent
from .http import api_key, drain, streaming_post
from .tools import EMPTY_OBJECT_SCHEMA, arguments, forced_function, functions, json_schema

DEFAULT_BASE_URL = "https://api.anthropic.com"
API_VERSION = "2023-06-01"


class _Message(msgspec.Struct):
    role: str
    content: str | list[dict[str, Any]]


class _Body(msgspec.Struct, kw_only=True, omit_defaults=True):
    model: str
    max_tokens: int
    messages: list[_Message]
    stream: bool
    system: str | list[dict[str, Any]] | None = None
    temperature: float | None = None
    top_p: float | None = None
    stop_sequences: list[str] | None = None
    tools: list[dict[str, Any]] | None = None
    tool_choice: dict[str, Any] | None = None
    thinking: dict[str, Any] | None = None
    metadata: dict[str, str] | None = None


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
    partial_json: str = ""
    thinking: str = ""
    signature: str = ""
    stop_reason: str | None = None


class _Block(msgspec.Struct):
    type: str = ""
    id: str | None = None
    name: str | None = None
    thinking: str = ""
    data: str | None = None


class _Error(msgspec.Struct):
    type: str = ""
    message: str = ""


class Event(msgspec.Struct):
    """One streamed event; which fields are set depends on its `type`."""

    type: str
    index: int = 0
    message: _MessageStart | None = None
    content_block: _Block | None = None
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
    """Folds one response's events into text and tool call pieces, a stop reason and usage.

    Input and cache usage come from `message_start`; output usage from `message_delta` is
    cumulative, so it replaces what was known, never adds to it. With `answer_tool` set (structured
    output asked as a forced tool), that tool's input is the answer's text.
    """

    def __init__(self, answer_tool: str | None = None) -> None:
        self.input_tokens = 0
        self.cached_tokens = 0
        self.output_tokens = 0
        self.finish_reason: FinishReason | None = None
        self.stopped = False
        self._answer_tool = answer_tool
        self._calls: dict[int, int] = {}
        """The platform's tool call index of each `tool_use` block, by the block's index."""
        self._thoughts: dict[int, int] = {}
        """The platform's thinking block index of each `thinking` block, by the block's index."""
        self._answer_blocks: set[int] = set()

    def read(self, data: str) -> list[ProviderEvent]:
        try:
            event = _event_decoder.decode(data)
        except msgspec.MsgspecError as exc:
            raise ProviderError("upstream_error", f"anthropic: malformed event ({exc}): {data[:200]!r}", upstream=True) from exc
        match event.type:
            case "content_block_delta" if event.delta is not None:
                delta = event.delta
                if delta.type == "text_delta" and delta.text:
                    return [Delta(text=delta.text)]
                if delta.type == "thinking_delta" and delta.thinking and event.index in self._thoughts:
                    return [Thinking(index=self._thoughts[event.index], text=delta.thinking)]
                if delta.type == "signature_delta" and delta.signature and event.index in self._thoughts:
                    return [Thinking(index=self._thoughts[event.index], signature=delta.signature)]
                if delta.type == "input_json_delta" and delta.partial_json:
                    if event.index in self._answer_blocks:
                        return [Delta(text=delta.partial_json)]
                    if (call := self._calls.get(event.index)) is not None:
                        return [ToolCallDelta(index=call, arguments=delta.partial_json)]
            case "content_block_start" if event.content_block is not None and event.content_block.type in ("thinking", "redacted_thinking"):
                block = event.content_block
                thought = self._thoughts[event.index] = len(self._thoughts)
                if block.type == "redacted_thinking":
                    return [Thinking(index=thought, redacted=block.data or "")]
                return [Thinking(index=thought, text=block.thinking)]
            case "content_block_start" if event.content_block is not None and event.content_block.type == "tool_use":
                block = event.content_block
                if self._answer_tool is not None and block.name == self._answer_tool:
                    self._answer_blocks.add(event.index)
                    return []
                call = self._calls[event.index] = len(self._calls)
                return [ToolCallDelta(index=call, id=block.id, name=block.name, arguments="")]
            case "message_start" if event.message is not None:
                self._usage(event.message.usage)
            case "message_delta":
                if event.delta is not None and event.delta.stop_reason:
                    reason = event.delta.stop_reason
                    forced = reason == "tool_use" and not self._calls
                    self.finish_reason = "stop" if forced else _FINISH.get(reason, "stop")
                if event.usage is not None:
                    self._usage(event.usage)
            case "message_stop":
                self.stopped = True
            case "error":
                error = event.error or _Error()
                raise ProviderError(_ERRORS.get(error.type, "upstream_error"), f"anthropic: {error.type}: {error.message}", upstream=True)
        return []

    def _usage(self, usage: _Usage) -> None:
        if usage.input_tokens is not None:
            cached = usage.cache_read_input_tokens or 0
            self.input_tokens = usage.input_tokens + (usage.cache_creation_input_tokens or 0) + cached
            self.cached_tokens = cached
        if usage.output_tokens is not None:
            self.output_tokens = usage.output_tokens

    def usage(self) -> TokenUsage:
        return TokenUsage(input_tokens=self.input_tokens, output_tokens=self.output_tokens, cached_tokens=self.cached_tokens)


def _blocks(content: str | list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{"type": "text", "text": content}] if isinstance(content, str) else content


def _content(message: ChatMessage) -> str | list[dict[str, Any]]:
    """A turn's content: its text, or blocks when it calls tools, answers a call, shows images, brings back its
    reasoning or marks a cache breakpoint (on its last block)."""
    blocks = _content_blocks(message)
    if isinstance(blocks, list) and message.cache_control and blocks:
        blocks[-1] = {**blocks[-1], "cache_control": message.cache_control}
    return blocks


def _content_blocks(message: ChatMessage) -> str | list[dict[str, Any]]:
    if message.role == "tool":
        return [{"type": "tool_result", "tool_use_id": message.tool_call_id or "", "content": message.content}]
    if not (message.tool_calls or message.images or message.thinking or message.cache_control):
        return message.content
    blocks: list[dict[str, Any]] = []
    for thought in message.thinking or ():
        if thought.redacted is not None:
            blocks.append({"type": "redacted_thinking", "data": thought.redacted})
        else:
            blocks.append({"type": "thinking", "thinking": thought.thinking, "signature": thought.signature or ""})
    if message.content or not (blocks or message.tool_calls or message.images):
        blocks.append({"type": "text", "text": message.content})
    for image in message.images or ():
        source = (
            {"type": "base64", "media_type": image.media_type, "data": image.data}
            if image.media_type
            else {"type": "url", "url": image.url}
        )
        blocks.append({"type": "image", "source": source})
    for call in message.tool_calls or ():
        blocks.append({"type": "tool_use", "id": call.id, "name": call.function.name, "input": arguments(call, "anthropic")})
    return blocks


def _turns(messages: list[ChatMessage]) -> tuple[str | list[dict[str, Any]] | None, list[_Message]]:
    """The system prompt and the turns, consecutive turns of one role joined (Anthropic wants them alternating);
    tool results go in a user turn, ahead of any text that follows them."""
    prompts = [m for m in messages if m.role == "system"]
    system: str | list[dict[str, Any]] | None = "\n\n".join(m.content for m in prompts) or None
    if system and (mark := next((m.cache_control for m in reversed(prompts) if m.cache_control), None)):
        system = [{"type": "text", "text": system, "cache_control": mark}]
    turns: list[_Message] = []
    for message in messages:
        if message.role == "system":
            continue
        role = "user" if message.role == "tool" else message.role
        content = _content(message)
        if turns and turns[-1].role == role:
            before = turns[-1].content
            if isinstance(before, str) and isinstance(content, str):
                turns[-1] = _Message(role, before + "\n\n" + content)
            else:
                turns[-1] = _Message(role, _blocks(before) + _blocks(content))
        else:
            turns.append(_Message(role, content))
    return system, turns


def _tools(params: GenerationParams) -> tuple[list[dict[str, Any]] | None, dict[str, Any] | None, str | None]:
    """Anthropic's `tools` and `tool_choice`, and the name of the tool forced for structured output (if asked)."""
    if (structured := json_schema(params.response_format)) is not None:
        answer, schema = structured
        tool = {"name": answer, "description": "Give the answer in this form.", "input_schema": schema or EMPTY_OBJECT_SCHEMA}
        return [tool], {"type": "tool", "name": answer}, answer
    if not params.tools:
        return None, None, None
    tools = [
        {"name": f.name, "input_schema": f.parameters, **({"description": f.description} if f.description else {})}
        for f in functions(params.tools)
    ]
    if params.tools_cache_control:
        tools[-1]["cache_control"] = params.tools_cache_control
    choice: dict[str, Any]
    if (name := forced_function(params.tool_choice)) is not None:
        choice = {"type": "tool", "name": name}
    else:
        choice = {"type": {"required": "any", "none": "none"}.get(str(params.tool_choice), "auto")}
    if params.parallel_tool_calls is False and choice["type"] != "none":
        choice["disable_parallel_tool_use"] = True
    return tools, choice, None


class AnthropicProvider:
    """Streams `/v1/messages`."""

    name = "anthropic"

    def __init__(self, http: aiohttp.ClientSession, environ: Mapping[str, str] = os.environ) -> None:
        self._http = http
        self._environ = environ

    def _request(self, request: ChatRequest, spec: ModelSpec) -> tuple[str, dict[str, str], bytes, str | None]:
        url = (spec.base_url or DEFAULT_BASE_URL).rstrip("/") + "/v1/messages"
        headers = {"content-type": "application/json", "accept": "text/event-stream", "anthropic-version": API_VERSION}
        if key := api_key(self._environ, spec.api_key_env, "anthropic"):
            headers["x-api-key"] = key
        if request.params.betas:
            headers["anthropic-beta"] = ",".join(request.params.betas)
        system, turns = _turns(request.messages)
        params = request.params
        tools, tool_choice, answer_tool = _tools(params)
        body = _Body(
            model=spec.upstream_model,
            max_tokens=min(params.max_tokens or spec.max_output_tokens, spec.max_output_tokens),
            messages=turns,
            stream=True,
            system=system,
            temperature=params.temperature,
            top_p=params.top_p,
            stop_sequences=params.stop,
            tools=tools,
            tool_choice=tool_choice,
            thinking=params.thinking,
            metadata=params.metadata,
        )
        return url, headers, json_encoder.encode(body), answer_tool

    async def stream(self, request: ChatRequest, spec: ModelSpec) -> AsyncIterator[ProviderEvent]:
        url, headers, body, answer_tool = self._request(request, spec)
        reader = EventReader(answer_tool)
        async with streaming_post(self._http, url, body=body, headers=headers, provider="anthropic") as response:
            events = response.events()
            async for data in events:
                if data:
                    for event in reader.read(data):
                        yield event
                if reader.stopped:
                    await drain(events)
                    break
        if not reader.stopped:
            raise ProviderError("network", "anthropic: the connection closed before message_stop")
        yield reader.usage()
        yield Done(reason=reader.finish_reason or "stop")
