"""Ollama's `/api/chat`, streamed as NDJSON (one JSON object a line)."""

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
    Embedding,
    FinishReason,
    ModelSpec,
    TokenUsage,
    ToolCallDelta,
    json_encoder,
)

from .base import ProviderError, ProviderEvent
from .http import api_key, drain, post_for, streaming_post
from .tools import arguments, check_count, float32_bytes, json_schema, names_by_call, new_call_id

DEFAULT_BASE_URL = "http://localhost:11434"


class _Function(msgspec.Struct, omit_defaults=True):
    name: str
    arguments: dict[str, Any] = {}


class _ToolCall(msgspec.Struct, omit_defaults=True):
    function: _Function
    id: str | None = None


class _Message(msgspec.Struct, omit_defaults=True):
    role: str
    content: str
    tool_calls: list[_ToolCall] | None = None
    tool_name: str | None = None
    images: list[str] | None = None
    """Base64 of each image (Ollama takes no URLs)."""


class _Options(msgspec.Struct, omit_defaults=True):
    temperature: float | None = None
    top_p: float | None = None
    num_predict: int | None = None
    stop: list[str] | None = None
    seed: int | None = None
    presence_penalty: float | None = None
    frequency_penalty: float | None = None


class _Body(msgspec.Struct, omit_defaults=True):
    model: str
    messages: list[_Message]
    stream: bool
    options: _Options
    tools: list[dict[str, Any]] | None = None
    format: str | dict[str, Any] | None = None


class _Reply(msgspec.Struct):
    content: str = ""
    tool_calls: list[_ToolCall] | None = None


class Line(msgspec.Struct):
    """One line of the response."""

    message: _Reply | None = None
    done: bool = False
    done_reason: str | None = None
    prompt_eval_count: int | None = None
    eval_count: int | None = None
    error: str | None = None


_line_decoder = msgspec.json.Decoder(Line)


def read_line(line: bytes) -> Line:
    """One decoded line; an `error` line or garbage raises `ProviderError`."""
    try:
        decoded = _line_decoder.decode(line)
    except (msgspec.MsgspecError, UnicodeDecodeError) as exc:  # JSON is UTF-8: msgspec refuses other bytes with the latter
        raise ProviderError("upstream_error", f"ollama: malformed line ({exc}): {line[:200]!r}", upstream=True) from exc
    if decoded.error:
        raise ProviderError("upstream_error", f"ollama: {decoded.error}", upstream=True)
    return decoded


def _messages(messages: list[ChatMessage]) -> list[_Message]:
    names = names_by_call(messages)
    out = []
    for m in messages:
        calls = [_ToolCall(_Function(c.function.name, arguments(c, "ollama"))) for c in m.tool_calls] if m.tool_calls else None
        images = [image.data for image in m.images if image.media_type] if m.images else None
        out.append(_Message(m.role, m.content, calls, names.get(m.tool_call_id or "") if m.role == "tool" else None, images))
    return out


class _Embeddings(msgspec.Struct):
    embeddings: list[list[float]]
    prompt_eval_count: int | None = None


_embeddings_decoder = msgspec.json.Decoder(_Embeddings)


class OllamaProvider:
    """Streams `/api/chat` from a local (or hosted) Ollama."""

    name = "ollama"

    def __init__(self, http: aiohttp.ClientSession, environ: Mapping[str, str] = os.environ) -> None:
        self._http = http
        self._environ = environ

    def _headers(self, spec: ModelSpec, accept: str) -> dict[str, str]:
        headers = {"content-type": "application/json", "accept": accept}
        if key := api_key(self._environ, spec.api_key_env, "ollama"):
            headers["authorization"] = f"Bearer {key}"
        return headers

    async def embed(self, request: ChatRequest, spec: ModelSpec) -> AsyncIterator[ProviderEvent]:
        """`/api/embed` of every input at once."""
        url = (spec.base_url or DEFAULT_BASE_URL).rstrip("/") + "/api/embed"
        body: dict[str, Any] = {"model": spec.upstream_model, "input": [m.content for m in request.messages]}
        if request.params.dimensions is not None:
            body["dimensions"] = request.params.dimensions
        headers = self._headers(spec, "application/json")
        answer = await post_for(
            self._http, url, body=json_encoder.encode(body), headers=headers, provider="ollama", decoder=_embeddings_decoder
        )
        check_count(len(answer.embeddings), len(request.messages), "ollama")
        for index, values in enumerate(answer.embeddings):
            yield Embedding(index=index, vector=float32_bytes(values))
        yield TokenUsage(input_tokens=answer.prompt_eval_count or 0, output_tokens=0)
        yield Done(reason="stop")

    async def stream(self, request: ChatRequest, spec: ModelSpec) -> AsyncIterator[ProviderEvent]:
        url = (spec.base_url or DEFAULT_BASE_URL).rstrip("/") + "/api/chat"
        headers = self._headers(spec, "application/x-ndjson")
        params = request.params
        structured = json_schema(params.response_format)
        body = _Body(
            model=spec.upstream_model,
            messages=_messages(request.messages),
            tools=params.tools if params.tool_choice != "none" else None,
            format=(structured[1] or "json") if structured else None,
            stream=True,
            options=_Options(
                temperature=params.temperature,
                top_p=params.top_p,
                num_predict=min(params.max_tokens or spec.max_output_tokens, spec.max_output_tokens),
                stop=params.stop,
                seed=params.seed,
                presence_penalty=params.presence_penalty,
                frequency_penalty=params.frequency_penalty,
            ),
        )
        final: Line | None = None
        calls = 0
        async with streaming_post(self._http, url, body=json_encoder.encode(body), headers=headers, provider="ollama") as response:
            lines = response.lines()
            async for raw in lines:
                if not raw.strip():
                    continue
                line = read_line(raw)
                reply = line.message
                if reply is not None and reply.content:
                    yield Delta(text=reply.content)
                for call in (reply.tool_calls if reply is not None else None) or ():
                    encoded = json_encoder.encode(call.function.arguments).decode()
                    yield ToolCallDelta(index=calls, id=call.id or new_call_id(), name=call.function.name, arguments=encoded)
                    calls += 1
                if line.done:
                    final = line
                    await drain(lines)
                    break
        if final is None:
            raise ProviderError("network", "ollama: the stream ended before `done`")
        if final.prompt_eval_count is not None or final.eval_count is not None:
            yield TokenUsage(input_tokens=final.prompt_eval_count or 0, output_tokens=final.eval_count or 0)
        reason: FinishReason = "length" if final.done_reason == "length" else "tool_calls" if calls else "stop"
        yield Done(reason=reason)
