"""`POST /v1/messages`: Anthropic's Messages API for every configured model, so the `anthropic` SDK works unchanged."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import msgspec
import structlog
from litestar import Request, Response, post
from litestar.datastructures import State
from litestar.response import Stream

from chatbot_contracts import ChatMessage, Delta, Done, Error, GenerationParams, Restart, Started, TokenUsage, Usage, json_encoder

from ..auth import Principal
from ..errors import BadRequest, UpstreamFailure, error_type_for
from ..follower import KEEPALIVE
from ..generation import Generation, start
from .schemas import Block, Message, MessagesRequest, MessageUsage, TextContent

log = structlog.get_logger()
_decoder = msgspec.json.Decoder(MessagesRequest)
_STOP = {"stop": "end_turn", "length": "max_tokens", "content_filter": "refusal", "tool_calls": "tool_use", "cancelled": "end_turn"}
_REFUSED = ("top_k", "tools", "tool_choice", "container", "mcp_servers")


def _text(content: str | list[Block], where: str) -> str:
    if isinstance(content, str):
        return content
    texts = []
    for index, block in enumerate(content):
        if block.type != "text" or block.text is None:
            raise BadRequest(
                f"`{block.type}` content blocks are not supported by this gateway (at $.{where}[{index}])", param=f"{where}[{index}]"
            )
        texts.append(block.text)
    return "\n".join(texts)


def to_platform(body: MessagesRequest) -> tuple[list[ChatMessage], GenerationParams]:
    """The messages and sampling settings of an Anthropic request; refuses what cannot be honoured."""
    for name in _REFUSED:
        if getattr(body, name) is not None:
            raise BadRequest(f"`{name}` is not supported by this gateway", param=name)
    if body.thinking is not None and body.thinking.get("type") != "disabled":
        raise BadRequest("extended `thinking` is not supported by this gateway", param="thinking")
    messages = [ChatMessage(role="system", content=_text(body.system, "system"))] if body.system else []
    messages += [ChatMessage(role=m.role, content=_text(m.content, f"messages[{i}].content")) for i, m in enumerate(body.messages)]
    params = GenerationParams(temperature=body.temperature, top_p=body.top_p, max_tokens=body.max_tokens, stop=body.stop_sequences)
    return messages, params


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


async def _stream(generation: Generation, alias: str, message_id: str) -> AsyncIterator[bytes]:
    """Anthropic's event sequence: message_start, one text block, message_delta with the final usage, message_stop.

    A client that leaves before the end cancels the generation (no resume in this protocol).
    """
    ended = False
    started = False
    text_sent = False
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
                    out.append(_event("content_block_start", {"index": 0, "content_block": {"type": "text", "text": ""}}))
                    started = True
                match event:
                    case Delta(text=text):
                        out.append(_event("content_block_delta", {"index": 0, "delta": {"type": "text_delta", "text": text}}))
                        text_sent = True
                    case Usage(usage=reported):
                        usage = msgspec.structs.asdict(_usage(reported))
                    case Restart() if text_sent:
                        out.append(
                            _event(
                                "error",
                                {
                                    "error": {
                                        "type": "api_error",
                                        "message": "the generation restarted after text was sent; retry the request",
                                    }
                                },
                            )
                        )
                        yield b"".join(out)
                        return
                    case Error(code=code, message=text):
                        out.append(_event("error", {"error": {"type": error_type_for(code, anthropic=True), "message": text}}))
                        ended = True
                        yield b"".join(out)
                        return
                    case Done(reason=reason):
                        out.append(_event("content_block_stop", {"index": 0}))
                        out.append(
                            _event(
                                "message_delta",
                                {"delta": {"stop_reason": _STOP.get(reason, "end_turn"), "stop_sequence": None}, "usage": usage},
                            )
                        )
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
    usage: TokenUsage | None = None
    stop = "end_turn"
    model = alias
    async for event in generation.events():
        match event:
            case Started(model=answering):
                model = answering
            case Delta(text=piece):
                text.append(piece)
            case Restart():
                text.clear()
            case Usage(usage=reported):
                usage = reported
            case Error(code=code, message=message, retry_after=retry_after):
                raise UpstreamFailure(code, message, retry_after)
            case Done(reason=reason):
                stop = _STOP.get(reason, "end_turn")
    return Message(id=message_id, model=model, content=[TextContent(text="".join(text))], stop_reason=stop, usage=_usage(usage))


@post("/v1/messages", tags=["anthropic"], status_code=200)
async def messages(request: Request[Principal, Any, Any], state: State) -> Response[Any]:
    """Create a message (Anthropic's Messages API), streamed (`stream: true`) or whole, with any configured model."""
    raw = await request.body()
    if not raw.strip():
        raise BadRequest("the request body is empty; send a JSON object with `model`, `max_tokens` and `messages`")
    try:
        body = _decoder.decode(raw)
    except msgspec.ValidationError as exc:
        raise BadRequest(f"invalid request: {exc}") from exc
    except msgspec.DecodeError as exc:
        raise BadRequest(f"the request body is not valid JSON: {exc}") from exc
    chat_messages, params = to_platform(body)
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
