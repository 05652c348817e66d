"""Google's Gemini API, streamed: `models/{m}:streamGenerateContent?alt=sse`."""

from __future__ import annotations

import mimetypes
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
    ErrorCode,
    FinishReason,
    GenerationParams,
    ModelSpec,
    TokenUsage,
    ToolCallDelta,
    json_encoder,
)

from .base import ProviderError, ProviderEvent
from .http import api_key, post_for, streaming_post
from .tools import (
    arguments,
    check_count,
    estimated_tokens,
    float32_bytes,
    forced_function,
    functions,
    json_schema,
    names_by_call,
    new_call_id,
)

DEFAULT_BASE_URL = "https://generativelanguage.googleapis.com"


class _FunctionCall(msgspec.Struct, omit_defaults=True):
    name: str
    args: dict[str, Any] = {}
    id: str | None = None


class _FunctionResponse(msgspec.Struct, omit_defaults=True):
    name: str
    response: dict[str, Any]


class _Part(msgspec.Struct, omit_defaults=True, rename="camel"):
    text: str = ""
    thought: bool | None = None
    function_call: _FunctionCall | None = None
    function_response: _FunctionResponse | None = None
    inline_data: dict[str, str] | None = None
    file_data: dict[str, str] | None = None


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
    response_mime_type: str | None = None
    response_json_schema: dict[str, Any] | None = None


class _Body(msgspec.Struct, omit_defaults=True, rename="camel"):
    contents: list[_Content]
    generation_config: _GenerationConfig
    system_instruction: _Content | None = None
    tools: list[dict[str, Any]] | None = None
    tool_config: dict[str, Any] | None = None


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
    """Folds the streamed responses into text, tool calls, a finish reason and usage (usageMetadata is cumulative).

    Gemini sends each function call whole, in one part, and finishes with `STOP` after calls."""

    def __init__(self) -> None:
        self.finish_reason: FinishReason | None = None
        self.usage: TokenUsage | None = None
        self.calls = 0

    def read(self, data: str) -> list[ProviderEvent]:
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
            return []
        events: list[ProviderEvent] = []
        for candidate in response.candidates[:1]:
            for part in candidate.content.parts if candidate.content is not None else ():
                if part.function_call is not None:
                    call = part.function_call
                    events.append(
                        ToolCallDelta(index=self.calls, id=call.id or new_call_id(), name=call.name, arguments=_encode(call.args))
                    )
                    self.calls += 1
                elif part.text and not part.thought:
                    events.append(Delta(text=part.text))
            if candidate.finish_reason:
                reason = candidate.finish_reason
                self.finish_reason = "length" if reason == "MAX_TOKENS" else "content_filter" if reason in _FILTERED else "stop"
        if self.calls and self.finish_reason == "stop":
            self.finish_reason = "tool_calls"
        return events


def _encode(value: dict[str, Any]) -> str:
    return json_encoder.encode(value).decode()


def _tool_result(content: str) -> dict[str, Any]:
    """A tool's output as the object `functionResponse.response` must be: the output itself when it is a JSON
    object, else `{"result": output}`."""
    try:
        decoded = msgspec.json.decode(content)
    except msgspec.DecodeError:
        return {"result": content}
    return decoded if isinstance(decoded, dict) else {"result": decoded}


def _contents(messages: list[ChatMessage]) -> list[_Content]:
    """The turns, tool calls as `functionCall` parts and their results as `functionResponse` parts, consecutive
    turns of one role joined."""
    names = names_by_call(messages)
    contents: list[_Content] = []
    for message in messages:
        if message.role == "system":
            continue
        parts: list[_Part] = []
        if message.role == "tool":
            name = names.get(message.tool_call_id or "")
            if name is None:
                raise ProviderError(
                    "bad_request", f"gemini: the tool result for `{message.tool_call_id}` answers no call in the conversation"
                )
            parts.append(_Part(function_response=_FunctionResponse(name=name, response=_tool_result(message.content))))
        elif message.content or not (message.tool_calls or message.images):
            parts.append(_Part(text=message.content))
        for image in message.images or ():
            if image.media_type:
                parts.append(_Part(inline_data={"mimeType": image.media_type, "data": image.data}))
            else:
                parts.append(_Part(file_data={"mimeType": mimetypes.guess_type(image.url)[0] or "image/jpeg", "fileUri": image.url}))
        for call in message.tool_calls or ():
            parts.append(_Part(function_call=_FunctionCall(name=call.function.name, args=arguments(call, "gemini"))))
        role = "model" if message.role == "assistant" else "user"
        if contents and contents[-1].role == role:
            contents[-1] = _Content(parts=contents[-1].parts + parts, role=role)
        else:
            contents.append(_Content(parts=parts, role=role))
    return contents


def _tools(params: GenerationParams) -> tuple[list[dict[str, Any]] | None, dict[str, Any] | None]:
    """`tools` (function declarations, their parameters as JSON Schema) and `toolConfig`."""
    if not params.tools:
        return None, None
    declarations = [
        {"name": f.name, "parametersJsonSchema": f.parameters, **({"description": f.description} if f.description else {})}
        for f in functions(params.tools)
    ]
    config: dict[str, Any] | None = None
    if (name := forced_function(params.tool_choice)) is not None:
        config = {"functionCallingConfig": {"mode": "ANY", "allowedFunctionNames": [name]}}
    elif params.tool_choice in ("required", "none", "auto"):
        config = {"functionCallingConfig": {"mode": {"required": "ANY", "none": "NONE", "auto": "AUTO"}[str(params.tool_choice)]}}
    return [{"functionDeclarations": declarations}], config


class _Values(msgspec.Struct):
    values: list[float]


class _BatchEmbeddings(msgspec.Struct):
    embeddings: list[_Values]


_embeddings_decoder = msgspec.json.Decoder(_BatchEmbeddings)


class GeminiProvider:
    """Streams `streamGenerateContent` with `alt=sse`."""

    name = "gemini"

    def __init__(self, http: aiohttp.ClientSession, environ: Mapping[str, str] = os.environ) -> None:
        self._http = http
        self._environ = environ

    async def embed(self, request: ChatRequest, spec: ModelSpec) -> AsyncIterator[ProviderEvent]:
        """`batchEmbedContents` of every input at once. Gemini reports no usage for embeddings: the tokens are estimated."""
        url = f"{(spec.base_url or DEFAULT_BASE_URL).rstrip('/')}/v1beta/models/{spec.upstream_model}:batchEmbedContents"
        headers = {"content-type": "application/json"}
        if key := api_key(self._environ, spec.api_key_env, "gemini"):
            headers["x-goog-api-key"] = key
        requests = []
        for message in request.messages:
            item: dict[str, Any] = {"model": f"models/{spec.upstream_model}", "content": {"parts": [{"text": message.content}]}}
            if request.params.dimensions is not None:
                item["outputDimensionality"] = request.params.dimensions
            requests.append(item)
        body = json_encoder.encode({"requests": requests})
        answer = await post_for(self._http, url, body=body, headers=headers, provider="gemini", decoder=_embeddings_decoder)
        check_count(len(answer.embeddings), len(request.messages), "gemini")
        for index, embedding in enumerate(answer.embeddings):
            yield Embedding(index=index, vector=float32_bytes(embedding.values))
        yield TokenUsage(input_tokens=sum(estimated_tokens(m.content) for m in request.messages), output_tokens=0, estimated=True)
        yield Done(reason="stop")

    def _request(self, request: ChatRequest, spec: ModelSpec) -> tuple[str, dict[str, str], bytes]:
        url = f"{(spec.base_url or DEFAULT_BASE_URL).rstrip('/')}/v1beta/models/{spec.upstream_model}:streamGenerateContent?alt=sse"
        headers = {"content-type": "application/json", "accept": "text/event-stream"}
        if key := api_key(self._environ, spec.api_key_env, "gemini"):
            headers["x-goog-api-key"] = key
        system = "\n\n".join(m.content for m in request.messages if m.role == "system")
        params = request.params
        tools, tool_config = _tools(params)
        structured = json_schema(params.response_format)
        body = _Body(
            contents=_contents(request.messages),
            tools=tools,
            tool_config=tool_config,
            system_instruction=_Content(parts=[_Part(text=system)]) if system else None,
            generation_config=_GenerationConfig(
                temperature=params.temperature,
                top_p=params.top_p,
                max_output_tokens=min(params.max_tokens or spec.max_output_tokens, spec.max_output_tokens),
                stop_sequences=params.stop,
                seed=params.seed,
                presence_penalty=params.presence_penalty,
                frequency_penalty=params.frequency_penalty,
                response_mime_type="application/json" if structured else None,
                response_json_schema=structured[1] if structured else None,
            ),
        )
        return url, headers, json_encoder.encode(body)

    async def stream(self, request: ChatRequest, spec: ModelSpec) -> AsyncIterator[ProviderEvent]:
        url, headers, body = self._request(request, spec)
        reader = ResponseReader()
        try:
            async with streaming_post(self._http, url, body=body, headers=headers, provider="gemini") as response:
                async for data in response.events():
                    if data:
                        for event in reader.read(data):
                            yield event
        except ProviderError as error:
            if error.code == "bad_request" and "api key not valid" in error.message.lower():
                raise ProviderError("authentication", error.message, status=error.status) from error
            raise
        if reader.finish_reason is None:
            raise ProviderError("network", "gemini: the stream ended without a finish reason")
        if reader.usage is not None:
            yield reader.usage
        yield Done(reason=reader.finish_reason)
