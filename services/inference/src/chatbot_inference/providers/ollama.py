"""Ollama's `/api/chat`, streamed as NDJSON (one JSON object a line)."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Mapping

import aiohttp
import msgspec

from chatbot_contracts import ChatRequest, Delta, Done, FinishReason, ModelSpec, TokenUsage, json_encoder

from .base import ProviderError, ProviderEvent
from .http import api_key, drain, streaming_post

DEFAULT_BASE_URL = "http://localhost:11434"


class _Message(msgspec.Struct):
    role: str
    content: str


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


class _Reply(msgspec.Struct):
    content: str = ""


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
    except msgspec.MsgspecError as exc:
        raise ProviderError("upstream_error", f"ollama: malformed line ({exc}): {line[:200]!r}", upstream=True) from exc
    if decoded.error:
        raise ProviderError("upstream_error", f"ollama: {decoded.error}", upstream=True)
    return decoded


class OllamaProvider:
    """Streams `/api/chat` from a local (or hosted) Ollama."""

    name = "ollama"

    def __init__(self, http: aiohttp.ClientSession, environ: Mapping[str, str] = os.environ) -> None:
        self._http = http
        self._environ = environ

    async def stream(self, request: ChatRequest, spec: ModelSpec) -> AsyncIterator[ProviderEvent]:
        url = (spec.base_url or DEFAULT_BASE_URL).rstrip("/") + "/api/chat"
        headers = {"content-type": "application/json", "accept": "application/x-ndjson"}
        if key := api_key(self._environ, spec.api_key_env, "ollama"):
            headers["authorization"] = f"Bearer {key}"
        params = request.params
        body = _Body(
            model=spec.upstream_model,
            messages=[_Message(m.role, m.content) for m in request.messages],
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
        async with streaming_post(self._http, url, body=json_encoder.encode(body), headers=headers, provider="ollama") as response:
            lines = response.lines()
            async for raw in lines:
                if not raw.strip():
                    continue
                line = read_line(raw)
                if line.message is not None and line.message.content:
                    yield Delta(text=line.message.content)
                if line.done:
                    final = line
                    await drain(lines)
                    break
        if final is None:
            raise ProviderError("network", "ollama: the stream ended before `done`")
        if final.prompt_eval_count is not None or final.eval_count is not None:
            yield TokenUsage(input_tokens=final.prompt_eval_count or 0, output_tokens=final.eval_count or 0)
        reason: FinishReason = "length" if final.done_reason == "length" else "stop"
        yield Done(reason=reason)
