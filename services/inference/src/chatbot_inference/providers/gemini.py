"""Google's Gemini API, streamed: `models/{m}:streamGenerateContent?alt=sse`."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Mapping

import aiohttp
import msgspec

from chatbot_contracts import ChatRequest, Delta, Done, ErrorCode, FinishReason, ModelSpec, TokenUsage, json_encoder

from .base import ProviderError, ProviderEvent
from .http import api_key, streaming_post

DEFAULT_BASE_URL = "https://generativelanguage.googleapis.com"


class _Part(msgspec.Struct, omit_defaults=True):
    text: str = ""
    thought: bool | None = None


class _Content(msgspec.Struct, omit_defaults=True):
    parts: list[_Part]
    role: str | None = None


class _GenerationConfig(msgspec.Struct, omit_defaults=True, rename="camel"):
    temperature: float | None = None
    top_p: float | None = None
    max_output_tokens: int | None = None
    stop_sequences: list[str] | None = None
    seed: int | None = None
    presence_penalty: float | None = None
    frequency_penalty: float | None = None


class _Body(msgspec.Struct, omit_defaults=True, rename="camel"):
    contents: list[_Content]
    generation_config: _GenerationConfig
    system_instruction: _Content | None = None


class _Candidate(msgspec.Struct, rename="camel"):
    content: _Content | None = None
    finish_reason: str | None = None


class _UsageMetadata(msgspec.Struct, rename="camel"):
    prompt_token_count: int = 0
    candidates_token_count: int = 0
    cached_content_token_count: int = 0
    thoughts_token_count: int = 0


class _PromptFeedback(msgspec.Struct, rename="camel"):
    block_reason: str | None = None


class _Error(msgspec.Struct):
    code: int = 0
    message: str = ""
    status: str = ""


class Response(msgspec.Struct, rename="camel"):
    """One streamed `GenerateContentResponse` (or a mid-stream `{"error": …}`)."""

    candidates: list[_Candidate] = []
    usage_metadata: _UsageMetadata | None = None
    prompt_feedback: _PromptFeedback | None = None
    error: _Error | None = None


_response_decoder = msgspec.json.Decoder(Response)

_FILTERED = {"SAFETY", "RECITATION", "BLOCKLIST", "PROHIBITED_CONTENT", "SPII", "IMAGE_SAFETY", "LANGUAGE"}
_ERRORS: dict[str, ErrorCode] = {
    "INVALID_ARGUMENT": "bad_request",
    "FAILED_PRECONDITION": "bad_request",
    "NOT_FOUND": "bad_request",
    "UNAUTHENTICATED": "authentication",
    "PERMISSION_DENIED": "permission",
    "RESOURCE_EXHAUSTED": "rate_limited",
    "UNAVAILABLE": "overloaded",
    "INTERNAL": "upstream_error",
    "DEADLINE_EXCEEDED": "timeout",
}


class ResponseReader:
    """Folds the streamed responses into text, a finish reason and usage (usageMetadata is cumulative)."""

    def __init__(self) -> None:
        self.finish_reason: FinishReason | None = None
        self.usage: TokenUsage | None = None

    def read(self, data: str) -> str | None:
        try:
            response = _response_decoder.decode(data)
        except msgspec.MsgspecError as exc:
            raise ProviderError("upstream_error", f"gemini: malformed response ({exc}): {data[:200]!r}", upstream=True) from exc
        if response.error is not None:
            code = _ERRORS.get(response.error.status, "upstream_error")
            raise ProviderError(code, f"gemini: {response.error.status or response.error.code}: {response.error.message}", upstream=True)
        if response.usage_metadata is not None:
            meta = response.usage_metadata
            self.usage = TokenUsage(
                input_tokens=meta.prompt_token_count,
                output_tokens=meta.candidates_token_count + meta.thoughts_token_count,
                cached_tokens=meta.cached_content_token_count,
            )
        if response.prompt_feedback is not None and response.prompt_feedback.block_reason:
            self.finish_reason = "content_filter"
            return None
        text = None
        for candidate in response.candidates[:1]:
            if candidate.content is not None:
                text = "".join(part.text for part in candidate.content.parts if not part.thought) or None
            if candidate.finish_reason:
                reason = candidate.finish_reason
                self.finish_reason = "length" if reason == "MAX_TOKENS" else "content_filter" if reason in _FILTERED else "stop"
        return text


class GeminiProvider:
    """Streams `streamGenerateContent` with `alt=sse`."""

    name = "gemini"

    def __init__(self, http: aiohttp.ClientSession, environ: Mapping[str, str] = os.environ) -> None:
        self._http = http
        self._environ = environ

    def _request(self, request: ChatRequest, spec: ModelSpec) -> tuple[str, dict[str, str], bytes]:
        url = f"{(spec.base_url or DEFAULT_BASE_URL).rstrip('/')}/v1beta/models/{spec.upstream_model}:streamGenerateContent?alt=sse"
        headers = {"content-type": "application/json", "accept": "text/event-stream"}
        if key := api_key(self._environ, spec.api_key_env, "gemini"):
            headers["x-goog-api-key"] = key
        system = "\n\n".join(m.content for m in request.messages if m.role == "system")
        contents = []
        for message in request.messages:
            if message.role == "system":
                continue
            if message.role not in ("user", "assistant"):
                raise ProviderError("bad_request", f"gemini: a `{message.role}` message cannot be sent to this provider")
            contents.append(_Content(parts=[_Part(text=message.content)], role="model" if message.role == "assistant" else "user"))
        params = request.params
        body = _Body(
            contents=contents,
            system_instruction=_Content(parts=[_Part(text=system)]) if system else None,
            generation_config=_GenerationConfig(
                temperature=params.temperature,
                top_p=params.top_p,
                max_output_tokens=min(params.max_tokens or spec.max_output_tokens, spec.max_output_tokens),
                stop_sequences=params.stop,
                seed=params.seed,
                presence_penalty=params.presence_penalty,
                frequency_penalty=params.frequency_penalty,
            ),
        )
        return url, headers, json_encoder.encode(body)

    async def stream(self, request: ChatRequest, spec: ModelSpec) -> AsyncIterator[ProviderEvent]:
        url, headers, body = self._request(request, spec)
        reader = ResponseReader()
        try:
            async with streaming_post(self._http, url, body=body, headers=headers, provider="gemini") as response:
                async for data in response.events():
                    if data and (text := reader.read(data)):
                        yield Delta(text=text)
        except ProviderError as error:
            if error.code == "bad_request" and "api key not valid" in error.message.lower():
                raise ProviderError("authentication", error.message, status=error.status) from error
            raise
        if reader.finish_reason is None:
            raise ProviderError("network", "gemini: the stream ended without a finish reason")
        if reader.usage is not None:
            yield reader.usage
        yield Done(reason=reader.finish_reason)
