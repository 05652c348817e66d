"""`/v1`: the OpenAI-compatible endpoints."""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any

import msgspec
import structlog
from litestar import Request, Response, get, post
from litestar.datastructures import State
from litestar.response import Stream

from chatbot_contracts import ChatRequest, Delta, Done, Error, Restart, Started, TokenUsage, ToolCallDelta, Usage, json_encoder
from chatbot_contracts.capabilities import refusal
from chatbot_contracts.tracing import traceparent_or_new

from ..auth import Principal
from ..errors import STATUS_BY_CODE, BadRequest, ModelNotFound, UpstreamFailure
from ..relay import KEEPALIVE, Batch
from .schemas import (
    ChatCompletion,
    ChatCompletionChunk,
    ChatCompletionRequest,
    Choice,
    ChunkChoice,
    ChunkDelta,
    ChunkFunction,
    ChunkToolCall,
    CompletionUsage,
    Model,
    ModelList,
    PromptTokensDetails,
    ResponseFunction,
    ResponseMessage,
    ResponseToolCall,
)
from .translate import to_platform

log = structlog.get_logger()
_decoder = msgspec.json.Decoder(ChatCompletionRequest)
_SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


def _decode(raw: bytes) -> ChatCompletionRequest:
    if not raw.strip():
        raise BadRequest("the request body is empty; send a JSON object with `model` and `messages`")
    try:
        return _decoder.decode(raw)
    except msgspec.ValidationError as exc:
        raise BadRequest(f"invalid request: {exc}") from exc
    except msgspec.DecodeError as exc:
        raise BadRequest(f"the request body is not valid JSON: {exc}") from exc


def _usage(usage: TokenUsage) -> CompletionUsage:
    return CompletionUsage(
        prompt_tokens=usage.input_tokens,
        completion_tokens=usage.output_tokens,
        total_tokens=usage.input_tokens + usage.output_tokens,
        prompt_tokens_details=PromptTokensDetails(cached_tokens=usage.cached_tokens),
    )


def _is_decisive(batch: Batch) -> bool:
    return any(isinstance(event, Delta | ToolCallDelta | Error | Done) for _, event in batch)


@post("/v1/chat/completions", tags=["openai"], status_code=200)
async def chat_completions(request: Request[Principal, Any, Any], state: State) -> Response[Any]:
    """Create a chat completion, streamed (`stream: true`, server-sent events) or whole."""
    body = _decode(await request.body())
    spec = state.registry.get(body.model)
    if spec is None:
        raise ModelNotFound(f"the model `{body.model}` does not exist; GET /v1/models lists the available ones", param="model")
    messages, params = to_platform(body)
    if problem := refusal(body.model, spec, params, messages):
        raise BadRequest(problem[1], code="unsupported_parameter", param=problem[0])
    principal = request.user
    now = time.time()
    chat = ChatRequest(
        request_id=uuid.uuid4().hex,
        model=body.model,
        messages=messages,
        params=params,
        owner=principal.owner,
        key_id=principal.key_id,
        enqueued_at=now,
        deadline=now + state.settings.chat.request_timeout_s,
        traceparent=traceparent_or_new(request.headers.get("traceparent")),
    )
    await state.relay.submit(chat)
    batches = state.relay.batches(chat.request_id, chat.deadline, keepalive_s=state.settings.chat.keepalive_s)
    headers = {"x-request-id": chat.request_id}

    # Hold the response until the first text, error or end arrives, so that a failure before
    # any token gets its own HTTP status instead of a 200 with an error inside the stream.
    prelude: list[Batch] = []
    async for batch in batches:
        prelude.append(batch)
        if batch is KEEPALIVE or _is_decisive(batch):
            break
    for batch in prelude:
        for _, event in batch:
            if isinstance(event, Error) and not any(isinstance(e, Delta | ToolCallDelta) for b in prelude for _, e in b):
                await batches.aclose()
                raise UpstreamFailure(event.code, event.message, event.retry_after)
    completion = _Completion(chat.request_id, int(now), body.model)
    if body.stream:
        include_usage = bool(body.stream_options and body.stream_options.include_usage)
        # No resume in OpenAI's protocol: a client that leaves cancels the generation.
        events = completion.sse(prelude, batches, include_usage, on_abandon=lambda: state.relay.cancel_soon(chat.request_id))
        return Stream(events, media_type="text/event-stream", headers={**_SSE_HEADERS, **headers})
    result = await completion.collect(prelude, batches)
    return Response(result, headers=headers)


class _Completion:
    """One completion's translation from platform events to OpenAI's objects."""

    def __init__(self, request_id: str, created: int, model: str) -> None:
        self.id = f"chatcmpl-{request_id}"
        self.created = created
        self.model = model
        self.text: list[str] = []
        self.tool_calls = _ToolCalls()
        self.usage: TokenUsage | None = None
        self.finish_reason = "stop"

    def _chunk(self, delta: ChunkDelta, finish_reason: str | None = None) -> bytes:
        chunk = ChatCompletionChunk(
            id=self.id,
            created=self.created,
            model=self.model,
            choices=[ChunkChoice(delta=delta, finish_reason=finish_reason)],
        )
        return b"data: " + json_encoder.encode(chunk) + b"\n\n"

    async def sse(
        self, prelude: list[Batch], rest: AsyncIterator[Batch], include_usage: bool, on_abandon: Callable[[], None]
    ) -> AsyncIterator[bytes]:
        """The chunks, then `[DONE]`; `on_abandon` runs when the client leaves before the end."""
        ended = False
        try:
            async for chunk in self._sse(prelude, rest, include_usage):
                yield chunk
            ended = True
        finally:
            if not ended:
                log.info("stream.abandoned", request_id=self.id.removeprefix("chatcmpl-"))
                on_abandon()

    async def _sse(self, prelude: list[Batch], rest: AsyncIterator[Batch], include_usage: bool) -> AsyncIterator[bytes]:
        async def all_batches() -> AsyncIterator[Batch]:
            for batch in prelude:
                yield batch
            async for batch in rest:
                yield batch

        role_sent = False
        async for batch in all_batches():
            if batch is KEEPALIVE:
                yield b": keepalive\n\n"
                continue
            out: list[bytes] = []
            if not role_sent:
                out.append(self._chunk(ChunkDelta(role="assistant", content="")))
                role_sent = True
            pending: list[str] = []
            for _, event in batch:
                match event:
                    case Started(model=model):
                        self.model = model
                    case Delta(text=text):
                        pending.append(text)
                    case ToolCallDelta():
                        out.extend(self._text_chunk(pending))
                        out.append(self._chunk(ChunkDelta(tool_calls=[_chunk_tool_call(event)])))
                        self.tool_calls.add(event)
                    case Usage(usage=usage):
                        self.usage = usage
                    case Restart() if self.text or pending or self.tool_calls:
                        # Text already on the wire cannot be taken back in OpenAI's protocol.
                        out.append(_error_event("upstream_error", "the generation restarted after text was sent; retry the request"))
                        yield b"".join(out)
                        return
                    case Error(code=code, message=message):
                        out.extend(self._text_chunk(pending))
                        out.append(_error_event(code, message))
                        yield b"".join(out)
                        return
                    case Done(reason=reason):
                        out.extend(self._text_chunk(pending))
                        out.append(self._chunk(ChunkDelta(), _finish_reason(reason)))
                        if include_usage and self.usage is not None:
                            usage_chunk = ChatCompletionChunk(
                                id=self.id, created=self.created, model=self.model, choices=[], usage=_usage(self.usage)
                            )
                            out.append(b"data: " + json_encoder.encode(usage_chunk) + b"\n\n")
                        out.append(b"data: [DONE]\n\n")
                        yield b"".join(out)
                        return
            out.extend(self._text_chunk(pending))
            if out:
                yield b"".join(out)

    def _text_chunk(self, pending: list[str]) -> list[bytes]:
        if not pending:
            return []
        text = "".join(pending)
        pending.clear()
        self.text.append(text)
        return [self._chunk(ChunkDelta(content=text))]

    async def collect(self, prelude: list[Batch], rest: AsyncIterator[Batch]) -> ChatCompletion:
        async def all_events() -> AsyncIterator[Any]:
            for batch in prelude:
                for _, event in batch:
                    yield event
            async for batch in rest:
                for _, event in batch:
                    yield event

        async for event in all_events():
            match event:
                case Started(model=model):
                    self.model = model
                case Delta(text=text):
                    self.text.append(text)
                case ToolCallDelta():
                    self.tool_calls.add(event)
                case Usage(usage=usage):
                    self.usage = usage
                case Restart():
                    self.text.clear()
                    self.tool_calls = _ToolCalls()
                case Error(code=code, message=message, retry_after=retry_after):
                    raise UpstreamFailure(code, message, retry_after)
                case Done(reason=reason):
                    self.finish_reason = _finish_reason(reason)
        return ChatCompletion(
            id=self.id,
            created=self.created,
            model=self.model,
            choices=[
                Choice(
                    message=ResponseMessage(
                        content="".join(self.text) or (None if self.tool_calls else ""), tool_calls=self.tool_calls.calls() or None
                    ),
                    finish_reason=self.finish_reason,
                )
            ],
            usage=_usage(self.usage) if self.usage else None,
        )


class _ToolCalls:
    """Tool call pieces put back together, by index."""

    def __init__(self) -> None:
        self._calls: dict[int, tuple[str, str, list[str]]] = {}

    def __bool__(self) -> bool:
        return bool(self._calls)

    def add(self, piece: ToolCallDelta) -> None:
        call_id, name, arguments = self._calls.get(piece.index, ("", "", []))
        arguments.append(piece.arguments)
        self._calls[piece.index] = (piece.id or call_id, piece.name or name, arguments)

    def calls(self) -> list[ResponseToolCall]:
        return [
            ResponseToolCall(id=call_id, function=ResponseFunction(name=name, arguments="".join(arguments)))
            for _, (call_id, name, arguments) in sorted(self._calls.items())
        ]


def _chunk_tool_call(piece: ToolCallDelta) -> ChunkToolCall:
    first = piece.id is not None
    return ChunkToolCall(
        index=piece.index,
        id=piece.id,
        type="function" if first else None,
        function=ChunkFunction(name=piece.name, arguments=piece.arguments),
    )


def _finish_reason(reason: str) -> str:
    return reason if reason in ("stop", "length", "tool_calls", "content_filter") else "stop"


def _error_event(code: str, message: str) -> bytes:
    _, error_type = STATUS_BY_CODE.get(code, (500, "api_error"))
    return b"data: " + json_encoder.encode({"error": {"message": message, "type": error_type, "code": code}}) + b"\n\n"


@get("/v1/models", tags=["openai"])
async def list_models(state: State) -> ModelList:
    """The model aliases of the registry."""
    return ModelList(data=[Model(id=alias, owned_by=spec.provider) for alias, spec in state.registry.models.items()])
