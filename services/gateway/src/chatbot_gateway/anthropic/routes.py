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
    ChatMessage,
    Delta,
    Done,
    Error,
    FunctionCall,
    GenerationParams,
    ImagePart,
    Restart,
    Started,
    TokenUsage,
    ToolCall,
    ToolCallDelta,
    Usage,
    json_encoder,
)

from ..auth import Principal
from ..errors import BadRequest, UpstreamFailure, decode_body, error_type_for
from ..follower import KEEPALIVE
from ..generation import Generation, ToolCalls, start
from ..images import ImageRules
from .schemas import Block, Message, MessageParam, MessagesRequest, MessageUsage, TextContent, ToolUseContent

log = structlog.get_logger()
_decoder = msgspec.json.Decoder(MessagesRequest)
_STOP = {"stop": "end_turn", "length": "max_tokens", "content_filter": "refusal", "tool_calls": "tool_use", "cancelled": "end_turn"}
_REFUSED = ("top_k", "container", "mcp_servers")
_TOOL_CHOICE = {"auto": "auto", "any": "required", "none": "none"}


def _text(content: str | list[Block] | None, where: str) -> str:
    if content is None:
        return ""
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


def _image(block: Block, at: str, images: ImageRules) -> ImagePart:
    source = block.source or {}
    if source.get("type") == "url" and isinstance(source.get("url"), str):
        return images.part(source["url"], f"{at}.source.url")
    if source.get("type") == "base64" and isinstance(source.get("data"), str):
        return images.inline(str(source.get("media_type", "")), source["data"], f"{at}.source")
    raise BadRequest(f"an image block needs a source of type base64 (media_type, data) or url (at $.{at}.source)", param=f"{at}.source")


def _turn(message: MessageParam, where: str, images: ImageRules) -> list[ChatMessage]:
    """One Anthropic turn as platform messages: an assistant turn with its tool calls, or a user turn's tool results
    (one `tool` message each) followed by its text."""
    if isinstance(message.content, str):
        return [ChatMessage(role=message.role, content=message.content)]
    texts: list[str] = []
    calls: list[ToolCall] = []
    results: list[ChatMessage] = []
    shown: list[ImagePart] = []
    for index, block in enumerate(message.content):
        at = f"{where}[{index}]"
        if block.type == "text" and block.text is not None:
            texts.append(block.text)
        elif block.type == "tool_use" and message.role == "assistant" and block.id and block.name:
            arguments = json_encoder.encode(block.input or {}).decode()
            calls.append(ToolCall(id=block.id, function=FunctionCall(name=block.name, arguments=arguments)))
        elif block.type == "image" and message.role == "user":
            shown.append(_image(block, at, images))
        elif block.type == "tool_result" and message.role == "user" and block.tool_use_id:
            output = _text(block.content, f"{at}.content")
            results.append(
                ChatMessage(role="tool", content=f"Error: {output}" if block.is_error else output, tool_call_id=block.tool_use_id)
            )
        else:
            raise BadRequest(
                f"`{block.type}` content blocks are not supported in a {message.role} turn by this gateway (at $.{at})", param=at
            )
    if message.role == "assistant":
        return [ChatMessage(role="assistant", content="\n".join(texts), tool_calls=calls or None)]
    if texts or shown or not results:
        return [*results, ChatMessage(role="user", content="\n".join(texts), images=shown or None)]
    return results


def _tools(body: MessagesRequest) -> tuple[list[dict[str, Any]] | None, str | dict[str, Any] | None, bool | None]:
    """Anthropic's client tools and tool choice in the platform's (OpenAI's) form; server tools are refused by name."""
    tools = None
    if body.tools:
        tools = []
        for index, tool in enumerate(body.tools):
            if tool.type not in (None, "custom"):
                raise BadRequest(
                    f"the server tool `{tool.type}` is not supported by this gateway (at $.tools[{index}])", param=f"tools[{index}]"
                )
            function: dict[str, Any] = {"name": tool.name, "parameters": tool.input_schema or {"type": "object", "properties": {}}}
            if tool.description:
                function["description"] = tool.description
            tools.append({"type": "function", "function": function})
    choice = body.tool_choice
    if choice is None:
        return tools, None, None
    parallel = False if choice.disable_parallel_tool_use else None
    if choice.type == "tool":
        if not choice.name:
            raise BadRequest("`tool_choice` of type `tool` needs the tool's `name`", param="tool_choice.name")
        return tools, {"type": "function", "function": {"name": choice.name}}, parallel
    return tools, _TOOL_CHOICE[choice.type], parallel


def to_platform(body: MessagesRequest, images: ImageRules) -> tuple[list[ChatMessage], GenerationParams]:
    """The messages and sampling settings of an Anthropic request; refuses what cannot be honoured."""
    for name in _REFUSED:
        if getattr(body, name) is not None:
            raise BadRequest(f"`{name}` is not supported by this gateway", param=name)
    if body.thinking is not None and body.thinking.get("type") != "disabled":
        raise BadRequest("extended `thinking` is not supported by this gateway", param="thinking")
    messages = [ChatMessage(role="system", content=_text(body.system, "system"))] if body.system else []
    for index, message in enumerate(body.messages):
        messages += _turn(message, f"messages[{index}].content", images)
    tools, tool_choice, parallel = _tools(body)
    params = GenerationParams(
        temperature=body.temperature,
        top_p=body.top_p,
        max_tokens=body.max_tokens,
        stop=body.stop_sequences,
        tools=tools,
        tool_choice=tool_choice if tools else None,
        parallel_tool_calls=parallel if tools else None,
    )
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


class _Blocks:
    """The content blocks of a streamed message: text and tool calls, each opened when it begins, closed when the
    next one begins or the message ends."""

    def __init__(self) -> None:
        self.index = -1
        self.open: int | None = None
        """The platform tool call index of the open `tool_use` block; -1 for a text block; None when none is open."""

    @property
    def sent(self) -> bool:
        return self.index >= 0

    def text(self, text: str) -> list[bytes]:
        out = [] if self.open == -1 else self._begin(-1, {"type": "text", "text": ""})
        return [*out, _event("content_block_delta", {"index": self.index, "delta": {"type": "text_delta", "text": text}})]

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
            case Restart():
                text.clear()
                calls = ToolCalls()
            case Usage(usage=reported):
                usage = reported
            case Error(code=code, message=message, retry_after=retry_after):
                raise UpstreamFailure(code, message, retry_after)
            case Done(reason=reason):
                stop = _STOP.get(reason, "end_turn")
    content: list[TextContent | ToolUseContent] = [TextContent(text="".join(text))] if text or not calls else []
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
    chat_messages, params = to_platform(body, state.images)
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
