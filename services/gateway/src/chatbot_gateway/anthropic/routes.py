"""`POST /v1/messages`: Anthropic's Messages API for every configured model, so the `anthropic` SDK works unchanged."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import msgspec
import structlog
from litestar import Request, Response, post
from litestar.datastructures import State
from litestar.response import Stream

from chatbot_contracts import (
    Delta,
    Done,
    Error,
    Restart,
    Started,
    Thinking,
    TokenUsage,
    ToolCallDelta,
    ToolCalls,
    Usage,
    json_encoder,
)

from ..auth import Principal
from ..errors import UpstreamFailure, decode_body, error_type_for
from ..follower import KEEPALIVE
from ..generation import Generation, start
from .schemas import Message, MessagesRequest, MessageUsage, RedactedThinkingContent, TextContent, ThinkingContent, ToolUseContent
from .translate import to_platform

log = structlog.get_logger()
_decoder = msgspec.json.Decoder(MessagesRequest)
_STOP = {"stop": "end_turn", "length": "max_tokens", "content_filter": "refusal", "tool_calls": "tool_use", "cancelled": "end_turn"}


def _usage(usage: TokenUsage | None) -> MessageUsage:
    if usage is None:
        return MessageUsage(input_tokens=0, output_tokens=0)
    return MessageUsage(
        input_tokens=usage.input_tokens - usage.cached_tokens,
        output_tokens=usage.output_tokens,
        cache_read_input_tokens=usage.cached_tokens,
    )


def _event(name: str, data: dict[str, Any]) -> bytes:
    return b"event: " + name.encode() + b"\ndata: " + json_encoder.encode({"type": name, **data}) + b"\n\n"


class _Blocks:
    """The content blocks of a streamed message: reasoning, text and tool calls, each opened when it begins, closed
    when the next one begins or the message ends."""

    def __init__(self) -> None:
        self.index = -1
        self.open: int | None = None
        """The platform tool call index of the open `tool_use` block; -1 for a text block; -2 - n for the thinking
        block n; None when none is open."""

    @property
    def sent(self) -> bool:
        return self.index >= 0

    def text(self, text: str) -> list[bytes]:
        out = [] if self.open == -1 else self._begin(-1, {"type": "text", "text": ""})
        return [*out, _event("content_block_delta", {"index": self.index, "delta": {"type": "text_delta", "text": text}})]

    def thinking(self, piece: Thinking) -> list[bytes]:
        if piece.redacted is not None:
            return [*self._begin(-2 - piece.index, {"type": "redacted_thinking", "data": piece.redacted}), *self.close()]
        out = [] if self.open == -2 - piece.index else self._begin(-2 - piece.index, {"type": "thinking", "thinking": "", "signature": ""})
        if piece.text:
            out.append(_event("content_block_delta", {"index": self.index, "delta": {"type": "thinking_delta", "thinking": piece.text}}))
        if piece.signature:
            out.append(
                _event("content_block_delta", {"index": self.index, "delta": {"type": "signature_delta", "signature": piece.signature}})
            )
        return out

    def tool(self, piece: ToolCallDelta) -> list[bytes]:
        out = []
        if piece.id is not None or self.open != piece.index:
            out = self._begin(piece.index, {"type": "tool_use", "id": piece.id or "", "name": piece.name or "", "input": {}})
        if piece.arguments:
            out.append(
                _event("content_block_delta", {"index": self.index, "delta": {"type": "input_json_delta", "partial_json": piece.arguments}})
            )
        return out

    def close(self) -> list[bytes]:
        if self.open is None:
            return []
        self.open = None
        return [_event("content_block_stop", {"index": self.index})]

    def _begin(self, key: int, block: dict[str, Any]) -> list[bytes]:
        out = self.close()
        self.index += 1
        self.open = key
        return [*out, _event("content_block_start", {"index": self.index, "content_block": block})]


async def _stream(generation: Generation, alias: str, message_id: str) -> AsyncIterator[bytes]:
    """Anthropic's event sequence: message_start, text and tool_use blocks, message_delta with the final usage,
    message_stop.

    A client that leaves before the end cancels the generation (no resume in this protocol).
    """
    ended = False
    started = False
    blocks = _Blocks()
    model = alias
    usage: dict[str, Any] = {"output_tokens": 0}
    try:
        async for batch in generation.batches():
            if batch is KEEPALIVE:
                yield _event("ping", {})
                continue
            out: list[bytes] = []
            for _, event in batch:
                if isinstance(event, Started):
                    model = event.model
                if not started:
                    message: dict[str, Any] = {
                        "id": message_id,
                        "type": "message",
                        "role": "assistant",
                        "model": model,
                        "content": [],
                        "stop_reason": None,
                        "stop_sequence": None,
                    }
                    out.append(_event("message_start", {"message": {**message, "usage": {"input_tokens": 0, "output_tokens": 0}}}))
                    started = True
                match event:
                    case Delta(text=text):
                        out += blocks.text(text)
                    case ToolCallDelta():
                        out += blocks.tool(event)
                    case Thinking():
                        out += blocks.thinking(event)
                    case Usage(usage=reported):
                        usage = msgspec.structs.asdict(_usage(reported))
                    case Restart() if blocks.sent:
                        error = {"type": "api_error", "message": "the generation restarted after text was sent; retry the request"}
                        out.append(_event("error", {"error": error}))
                        yield b"".join(out)
                        return
                    case Error(code=code, message=text):
                        out.append(_event("error", {"error": {"type": error_type_for(code, anthropic=True), "message": text}}))
                        ended = True
                        yield b"".join(out)
                        return
                    case Done(reason=reason):
                        if not blocks.sent:
                            out += blocks.text("")[:1]
                        out += blocks.close()
                        delta = {"stop_reason": _STOP.get(reason, "end_turn"), "stop_sequence": None}
                        out.append(_event("message_delta", {"delta": delta, "usage": usage}))
                        out.append(_event("message_stop", {}))
                        ended = True
                        yield b"".join(out)
                        return
            if out:
                yield b"".join(out)
    finally:
        if not ended:
            log.info("stream.abandoned", request_id=generation.chat.request_id)
            generation.cancel()


async def _whole(generation: Generation, alias: str, message_id: str) -> Message:
    text: list[str] = []
    calls = ToolCalls()
    thoughts: dict[int, tuple[list[str], list[str], str | None]] = {}
    """Each thinking block's text and signature pieces, or its redacted data."""
    usage: TokenUsage | None = None
    stop = "end_turn"
    model = alias
    async for event in generation.events():
        match event:
            case Started(model=answering):
                model = answering
            case Delta(text=piece):
                text.append(piece)
            case ToolCallDelta():
                calls.add(event)
            case Thinking(index=index):
                said, signed, _ = thoughts.setdefault(index, ([], [], event.redacted))
                said.append(event.text)
                signed.append(event.signature or "")
            case Restart():
                text.clear()
                calls = ToolCalls()
                thoughts.clear()
            case Usage(usage=reported):
                usage = reported
            case Error(code=code, message=message, retry_after=retry_after):
                raise UpstreamFailure(code, message, retry_after)
            case Done(reason=reason):
                stop = _STOP.get(reason, "end_turn")
    content: list[ThinkingContent | RedactedThinkingContent | TextContent | ToolUseContent] = [
        RedactedThinkingContent(data=redacted)
        if redacted is not None
        else ThinkingContent(thinking="".join(said), signature="".join(signed))
        for said, signed, redacted in (thoughts[index] for index in sorted(thoughts))
    ]
    if text or not calls:
        content.append(TextContent(text="".join(text)))
    content += [ToolUseContent(id=call.id, name=call.function.name, input=_input(call.function.arguments)) for call in calls.calls()]
    return Message(id=message_id, model=model, content=content, stop_reason=stop, usage=_usage(usage))


def _input(arguments: str) -> Any:
    """A call's arguments as the object of a `tool_use` block (the text itself, should the model have written no JSON)."""
    try:
        return msgspec.json.decode(arguments or "{}")
    except msgspec.DecodeError:
        return arguments


@post("/v1/messages", tags=["anthropic"], status_code=200)
async def messages(request: Request[Principal, Any, Any], state: State) -> Response[Any]:
    """Create a message (Anthropic's Messages API), streamed (`stream: true`) or whole, with any configured model."""
    body = decode_body(await request.body(), _decoder, "`model`, `max_tokens` and `messages`")
    chat_messages, params = to_platform(body, state.images, request.headers.get("anthropic-beta"))
    generation = await start(request, state, body.model, chat_messages, params)
    message_id = f"msg_{generation.chat.request_id}"
    headers = {**generation.headers, "request-id": generation.chat.request_id}
    if body.stream:
        return Stream(
            _stream(generation, body.model, message_id),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no", **headers},
        )
    return Response(await _whole(generation, body.model, message_id), headers=headers)
