"""`/v1`: the OpenAI-compatible endpoints."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import msgspec
import structlog
from litestar import Request, Response, get, post
from litestar.datastructures import State
from litestar.response import Stream

from chatbot_contracts import Delta, Done, Error, Restart, Started, TokenUsage, ToolCallDelta, ToolCalls, Usage, json_encoder
from chatbot_contracts.knowledge import Grounding

from ..auth import Principal
from ..errors import STATUS_BY_CODE, UpstreamFailure, decode_body
from ..follower import KEEPALIVE, Batch
from ..generation import Generation, start
from ..grounding import ground, grounded
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
    GroundedChatCompletion,
    GroundedChatCompletionChunk,
    Model,
    ModelList,
    PromptTokensDetails,
    ResponseMessage,
)
from .translate import to_platform

log = structlog.get_logger()
_decoder = msgspec.json.Decoder(ChatCompletionRequest)
_SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


def _usage(usage: TokenUsage) -> CompletionUsage:
    return CompletionUsage(
        prompt_tokens=usage.input_tokens,
        completion_tokens=usage.output_tokens,
        total_tokens=usage.input_tokens + usage.output_tokens,
        prompt_tokens_details=PromptTokensDetails(cached_tokens=usage.cached_tokens),
    )


@post("/v1/chat/completions", tags=["openai"], status_code=200)
async def chat_completions(request: Request[Principal, Any, Any], state: State) -> Response[Any]:
    """Create a chat completion, streamed (`stream: true`, server-sent events) or whole."""
    body = decode_body(await request.body(), _decoder, "`model` and `messages`")
    messages, params = to_platform(body, state.images)
    grounding = await ground(request, state, body.model, body.knowledge_bases, messages) if body.knowledge_bases else None
    if grounding is not None:
        messages = grounded(messages, grounding.prompt)
    generation = await start(request, state, body.model, messages, params)
    headers = generation.headers
    completion = _Completion(generation.chat.request_id, int(generation.chat.enqueued_at), body.model, grounding)
    if body.stream:
        include_usage = bool(body.stream_options and body.stream_options.include_usage)
        events = completion.sse(generation, include_usage)
        return Stream(events, media_type="text/event-stream", headers={**_SSE_HEADERS, **headers})
    whole = await completion.collect(generation)
    if grounding is not None:
        return Response(GroundedChatCompletion(**msgspec.structs.asdict(whole), sources=grounding.sources), headers=headers)
    return Response(whole, headers=headers)


class _Completion:
    """One completion's translation from platform events to OpenAI's objects."""

    def __init__(self, request_id: str, created: int, model: str, grounding: Grounding | None = None) -> None:
        self.id = f"chatcmpl-{request_id}"
        self.grounding = grounding
        self.created = created
        self.model = model
        self.text: list[str] = []
        """The answer's text, when it is not streamed (`collect`)."""
        self.text_sent = False
        """Whether a streamed answer has sent text, which a restart cannot take back. Its text is not kept: a string a
        chunk, it was most of the gateway's memory at many long streams."""
        self.tool_calls = ToolCalls()
        self.usage: TokenUsage | None = None
        self.finish_reason = "stop"
        self.role_sent = False
        self._text_around: tuple[bytes, bytes] | None = None
        """A text chunk's bytes before and after its text (for the current model)."""

    def _chunk(self, delta: ChunkDelta, finish_reason: str | None = None) -> bytes:
        chunk = ChatCompletionChunk(
            id=self.id,
            created=self.created,
            model=self.model,
            choices=[ChunkChoice(delta=delta, finish_reason=finish_reason)],
        )
        return b"data: " + json_encoder.encode(chunk) + b"\n\n"

    def _first_chunk(self) -> bytes:
        """The role's chunk; a grounded stream's carries its sources too, before any text."""
        if self.grounding is None:
            return self._chunk(ChunkDelta(role="assistant", content=""))
        chunk = GroundedChatCompletionChunk(
            id=self.id,
            created=self.created,
            model=self.model,
            choices=[ChunkChoice(delta=ChunkDelta(role="assistant", content=""))],
            sources=self.grounding.sources,
        )
        return b"data: " + json_encoder.encode(chunk) + b"\n\n"

    async def sse(self, generation: Generation, include_usage: bool) -> AsyncIterator[bytes]:
        """The chunks, then `[DONE]`; a client that leaves before the end cancels the generation (no resume here)."""
        ended = False
        try:
            async for batch in generation.batches():
                chunk, last = self._render(batch, include_usage)
                if chunk:
                    yield chunk
                if last:
                    break
            ended = True
        finally:
            if not ended:
                log.info("stream.abandoned", request_id=generation.chat.request_id)
                generation.cancel()

    def _render(self, batch: Batch, include_usage: bool) -> tuple[bytes, bool]:
        """One batch's chunks, and whether they end the stream."""
        if batch is KEEPALIVE:
            return b": keepalive\n\n", False
        out: list[bytes] = []
        if not self.role_sent:
            out.append(self._first_chunk())
            self.role_sent = True
        pending: list[str] = []
        for _, event in batch:
            match event:
                case Started(model=model):
                    self.model = model
                    self._text_around = None
                case Delta(text=text):
                    pending.append(text)
                case ToolCallDelta():
                    out.extend(self._text_chunk(pending))
                    out.append(self._chunk(ChunkDelta(tool_calls=[_chunk_tool_call(event)])))
                    self.tool_calls.add(event)
                case Usage(usage=usage):
                    self.usage = usage
                case Restart() if self.text_sent or pending or self.tool_calls:
                    # Text already on the wire cannot be taken back in OpenAI's protocol.
                    out.append(_error_event("upstream_error", "the generation restarted after text was sent; retry the request"))
                    return b"".join(out), True
                case Error(code=code, message=message):
                    out.extend(self._text_chunk(pending))
                    out.append(_error_event(code, message))
                    return b"".join(out), True
                case Done(reason=reason):
                    out.extend(self._text_chunk(pending))
                    out.append(self._chunk(ChunkDelta(), _finish_reason(reason)))
                    if include_usage and self.usage is not None:
                        usage_chunk = ChatCompletionChunk(
                            id=self.id, created=self.created, model=self.model, choices=[], usage=_usage(self.usage)
                        )
                        out.append(b"data: " + json_encoder.encode(usage_chunk) + b"\n\n")
                    out.append(b"data: [DONE]\n\n")
                    return b"".join(out), True
        out.extend(self._text_chunk(pending))
        return b"".join(out), False

    def _text_chunk(self, pending: list[str]) -> list[bytes]:
        if not pending:
            return []
        text = "".join(pending)
        pending.clear()
        self.text_sent = True
        if self._text_around is None:
            # The chunk for a marker, cut around it: every text chunk is then one string encoded, not a struct.
            before, marker, after = self._chunk(ChunkDelta(content=_MARKER)).partition(_ENCODED_MARKER)
            assert marker, "the marker is in the chunk"
            self._text_around = (before, after)
        before, after = self._text_around
        return [before + json_encoder.encode(text) + after]

    async def collect(self, generation: Generation) -> ChatCompletion:
        async for event in generation.events():
            match event:
                case Started(model=model):
                    self.model = model
                    self._text_around = None
                case Delta(text=text):
                    self.text.append(text)
                case ToolCallDelta():
                    self.tool_calls.add(event)
                case Usage(usage=usage):
                    self.usage = usage
                case Restart():
                    self.text.clear()
                    self.tool_calls = ToolCalls()
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


def _chunk_tool_call(piece: ToolCallDelta) -> ChunkToolCall:
    first = piece.id is not None
    return ChunkToolCall(
        index=piece.index,
        id=piece.id,
        type="function" if first else None,
        function=ChunkFunction(name=piece.name, arguments=piece.arguments),
    )


_MARKER = "\u0000marker\u0000"
_ENCODED_MARKER = json_encoder.encode(_MARKER)


def _finish_reason(reason: str) -> str:
    return reason if reason in ("stop", "length", "tool_calls", "content_filter") else "stop"


def _error_event(code: str, message: str) -> bytes:
    _, error_type = STATUS_BY_CODE.get(code, (500, "api_error"))
    return b"data: " + json_encoder.encode({"error": {"message": message, "type": error_type, "code": code}}) + b"\n\n"


@get("/v1/models", tags=["openai"])
async def list_models(request: Request[Principal, Any, Any], state: State) -> ModelList:
    """The model aliases of the registry that this key may use."""
    allowed = request.user
    return ModelList(
        data=[
            Model(id=alias, owned_by=spec.provider, mode=spec.mode)
            for alias, spec in state.registry.models.items()
            if allowed.may_use(alias)
        ]
    )
