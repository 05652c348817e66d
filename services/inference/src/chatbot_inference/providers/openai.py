"""OpenAI's Chat Completions API, streamed: OpenAI and every compatible server (vLLM, llama.cpp, OpenRouter…)."""

from __future__ import annotations

import base64
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
    Embedding,
    FinishReason,
    ModelSpec,
    TokenUsage,
    ToolCall,
    ToolCallDelta,
    json_encoder,
)

from .base import ProviderError, ProviderEvent
from .http import api_key, drain, post_for, streaming_post
from .tools import check_count, float32_bytes

DEFAULT_BASE_URL = "https://api.openai.com/v1"


class _Message(msgspec.Struct, omit_defaults=True):
    role: str
    content: str | list[dict[str, Any]] | None
    name: str | None = None
    tool_calls: list[ToolCall] | None = None
    tool_call_id: str | None = None


class _StreamOptions(msgspec.Struct, frozen=True):
    include_usage: bool = True


class _Body(msgspec.Struct, kw_only=True, omit_defaults=True):
    model: str
    messages: list[_Message]
    stream: bool
    stream_options: _StreamOptions
    temperature: float | None = None
    top_p: float | None = None
    max_tokens: int | None = None
    stop: list[str] | None = None
    seed: int | None = None
    frequency_penalty: float | None = None
    presence_penalty: float | None = None
    tools: list[dict[str, Any]] | None = None
    tool_choice: str | dict[str, Any] | None = None
    parallel_tool_calls: bool | None = None
    response_format: dict[str, Any] | None = None


# What the adapter reads of a chunk; everything else is ignored.
class _FunctionPiece(msgspec.Struct, frozen=True):
    name: str | None = None
    arguments: str | None = None


class _ToolCallPiece(msgspec.Struct, frozen=True):
    index: int = 0
    id: str | None = None
    function: _FunctionPiece | None = None


class _Delta(msgspec.Struct, frozen=True):
    content: str | None = None
    tool_calls: list[_ToolCallPiece] | None = None


class _Choice(msgspec.Struct):
    delta: _Delta = _Delta()
    finish_reason: str | None = None


class _PromptDetails(msgspec.Struct):
    cached_tokens: int | None = 0


class _Usage(msgspec.Struct):
    prompt_tokens: int = 0
    completion_tokens: int = 0
    prompt_tokens_details: _PromptDetails | None = None


class _StreamError(msgspec.Struct):
    message: str = ""
    code: str | int | None = None


class Chunk(msgspec.Struct):
    """One `chat.completion.chunk` (or a mid-stream `{"error": …}`)."""

    choices: list[_Choice] = []
    usage: _Usage | None = None
    error: _StreamError | None = None


_STREAM_OPTIONS = _StreamOptions(include_usage=True)
chunk_decoder = msgspec.json.Decoder(Chunk)

_FINISH: dict[str, FinishReason] = {
    "stop": "stop",
    "length": "length",
    "tool_calls": "tool_calls",
    "function_call": "tool_calls",
    "content_filter": "content_filter",
}


class ChunkReader:
    """Turns the chunks of one response into provider events; holds what must wait for the end."""

    def __init__(self) -> None:
        self.finish_reason: FinishReason | None = None
        self.usage: TokenUsage | None = None

    def read(self, data: str) -> list[ProviderEvent]:
        """The events in one chunk (text, tool call pieces); raises `ProviderError` for error chunks."""
        try:
            chunk = chunk_decoder.decode(data)
        except msgspec.MsgspecError as exc:
            raise ProviderError("upstream_error", f"openai: malformed chunk ({exc}): {data[:200]!r}", upstream=True) from exc
        if chunk.error is not None:
            raise ProviderError("upstream_error", f"openai: error in stream: {chunk.error.message or chunk.error.code}", upstream=True)
        if chunk.usage is not None:
            details = chunk.usage.prompt_tokens_details
            self.usage = TokenUsage(
                input_tokens=chunk.usage.prompt_tokens,
                output_tokens=chunk.usage.completion_tokens,
                cached_tokens=(details.cached_tokens or 0) if details else 0,
            )
        events: list[ProviderEvent] = []
        for choice in chunk.choices[:1]:
            if choice.finish_reason:
                self.finish_reason = _FINISH.get(choice.finish_reason, "stop")
            if choice.delta.content:
                events.append(Delta(text=choice.delta.content))
            for piece in choice.delta.tool_calls or ():
                function = piece.function or _FunctionPiece()
                events.append(ToolCallDelta(index=piece.index, id=piece.id, name=function.name, arguments=function.arguments or ""))
        return events


def _message(message: ChatMessage) -> _Message:
    # An assistant turn that only called tools has no content: OpenAI wants null there, not "".
    content: str | list[dict[str, Any]] | None = None if message.tool_calls and not message.content else message.content
    if message.images:
        parts: list[dict[str, Any]] = [{"type": "text", "text": message.content}] if message.content else []
        for image in message.images:
            url: dict[str, Any] = {"url": image.url} | ({"detail": image.detail} if image.detail else {})
            parts.append({"type": "image_url", "image_url": url})
        content = parts
    return _Message(message.role, content, message.name, message.tool_calls, message.tool_call_id)


class _EmbeddingItem(msgspec.Struct):
    index: int
    embedding: str | list[float]
    """base64 of float32 values (as asked), or the values (from a compatible server that ignores the ask)."""


class _EmbeddingUsage(msgspec.Struct):
    prompt_tokens: int = 0


class _Embeddings(msgspec.Struct):
    data: list[_EmbeddingItem]
    usage: _EmbeddingUsage | None = None


_embeddings_decoder = msgspec.json.Decoder(_Embeddings)


class OpenAIProvider:
    """Streams `/chat/completions` with `stream_options.include_usage`."""

    name = "openai"

    def __init__(self, http: aiohttp.ClientSession, environ: Mapping[str, str] = os.environ) -> None:
        self._http = http
        self._environ = environ

    def _headers(self, spec: ModelSpec, accept: str) -> dict[str, str]:
        headers = {"content-type": "application/json", "accept": accept}
        if key := api_key(self._environ, spec.api_key_env, "openai"):
            headers["authorization"] = f"Bearer {key}"
        return headers

    async def embed(self, request: ChatRequest, spec: ModelSpec) -> AsyncIterator[ProviderEvent]:
        """`/embeddings` of every input at once, asked as base64 (the platform's own float32 form)."""
        url = (spec.base_url or DEFAULT_BASE_URL).rstrip("/") + "/embeddings"
        body: dict[str, Any] = {"model": spec.upstream_model, "input": [m.content for m in request.messages], "encoding_format": "base64"}
        if request.params.dimensions is not None:
            body["dimensions"] = request.params.dimensions
        headers = self._headers(spec, "application/json")
        answer = await post_for(
            self._http, url, body=json_encoder.encode(body), headers=headers, provider="openai", decoder=_embeddings_decoder
        )
        check_count(len(answer.data), len(request.messages), "openai")
        for item in sorted(answer.data, key=lambda item: item.index):
            vector = base64.b64decode(item.embedding) if isinstance(item.embedding, str) else float32_bytes(item.embedding)
            yield Embedding(index=item.index, vector=vector)
        yield TokenUsage(input_tokens=answer.usage.prompt_tokens if answer.usage else 0, output_tokens=0)
        yield Done(reason="stop")

    def _request(self, request: ChatRequest, spec: ModelSpec) -> tuple[str, dict[str, str], bytes]:
        url = (spec.base_url or DEFAULT_BASE_URL).rstrip("/") + "/chat/completions"
        headers = self._headers(spec, "text/event-stream")
        params = request.params
        body = _Body(
            model=spec.upstream_model,
            messages=[_message(m) for m in request.messages],
            stream=True,
            stream_options=_STREAM_OPTIONS,
            temperature=params.temperature,
            top_p=params.top_p,
            max_tokens=min(params.max_tokens or spec.max_output_tokens, spec.max_output_tokens),
            stop=params.stop,
            seed=params.seed,
            frequency_penalty=params.frequency_penalty,
            presence_penalty=params.presence_penalty,
            tools=params.tools,
            tool_choice=params.tool_choice,
            parallel_tool_calls=params.parallel_tool_calls,
            response_format=params.response_format,
        )
        return url, headers, json_encoder.encode(body)

    async def stream(self, request: ChatRequest, spec: ModelSpec) -> AsyncIterator[ProviderEvent]:
        url, headers, body = self._request(request, spec)
        reader = ChunkReader()
        completed = False
        async with streaming_post(self._http, url, body=body, headers=headers, provider="openai") as response:
            events = response.events()
            async for data in events:
                if data == "[DONE]":
                    completed = True
                    await drain(events)
                    break
                if data:
                    for event in reader.read(data):
                        yield event
        if not completed and reader.finish_reason is None:
            raise ProviderError("network", "openai: the connection closed before the answer was complete")
        if reader.usage is not None:
            yield reader.usage
        yield Done(reason=reader.finish_reason or "stop")
