"""`/v1/responses`: OpenAI's Responses API for every configured model, with responses kept per owner.

A response is one generation, started like a chat completion (limits, budgets, cache, the inference log
alike); this module translates the Responses API's input items and tools into the platform's messages,
and the platform's stream events into the Responses API's items and event sequence.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import msgspec
import redis.exceptions
import structlog
from litestar import Request, Response, delete, get, post
from litestar.datastructures import State
from litestar.params import FromPath
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
from ..errors import BadRequest, NotFound, UpstreamFailure, decode_body
from ..follower import KEEPALIVE, Batch
from ..generation import Generation, start
from ..images import ImageRules
from ..tools import check_tool_choice
from .responses_schemas import (
    INPUT_ITEMS,
    DeletedResponse,
    FunctionCallItem,
    FunctionCallOutputItem,
    IncompleteDetails,
    InputMessage,
    InputText,
    InputTokensDetails,
    OutputFunctionCall,
    OutputItem,
    OutputMessage,
    OutputText,
    OutputTokensDetails,
    ResponseError,
    ResponsesRequest,
    ResponseUsage,
)
from .responses_schemas import Response as ResponseObject

log = structlog.get_logger()
_decoder = msgspec.json.Decoder(ResponsesRequest)
_SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
_REFUSED = ("background", "conversation", "prompt", "max_tool_calls", "top_logprobs")


class StoredResponse(msgspec.Struct, kw_only=True):
    """What `store` keeps: the response as `GET` returns it, and the conversation up to and including its output
    (without `instructions`, which do not carry over to a response that follows it)."""

    response: ResponseObject
    messages: list[ChatMessage]


_stored_decoder = msgspec.json.Decoder(StoredResponse)


# --- Request -----------------------------------------------------------------------------------


def _text(content: str | list[InputText], where: str, images: ImageRules | None = None) -> tuple[str, list[ImagePart]]:
    """A content's text, and its images where `images` (the rules) says they may be (user turns)."""
    if isinstance(content, str):
        return content, []
    texts: list[str] = []
    shown: list[ImagePart] = []
    for index, part in enumerate(content):
        at = f"{where}[{index}]"
        if part.type in ("input_text", "output_text") and part.text is not None:
            texts.append(part.text)
        elif part.type == "input_image" and part.image_url is not None and images is not None:
            shown.append(images.part(part.image_url, f"{at}.image_url", part.detail))
        else:
            raise BadRequest(f"`{part.type}` content is not supported here by this gateway (at $.{at})", param=at)
    return "\n".join(texts), shown


def _item(raw: dict[str, Any], index: int) -> InputMessage | FunctionCallItem | FunctionCallOutputItem:
    kind = raw.get("type", "message")
    model = INPUT_ITEMS.get(kind) if isinstance(kind, str) else None
    if model is None:
        raise BadRequest(f"input items of type `{kind}` are not supported by this gateway (at $.input[{index}])", param=f"input[{index}]")
    try:
        return msgspec.convert(raw, model)
    except msgspec.ValidationError as exc:
        raise BadRequest(f"invalid request: {exc} (in $.input[{index}])", param=f"input[{index}]") from exc


def input_messages(body: ResponsesRequest, images: ImageRules) -> list[ChatMessage]:
    """The request's `input` as platform messages: function calls join the assistant turn before them."""
    if isinstance(body.input, str):
        return [ChatMessage(role="user", content=body.input)]
    messages: list[ChatMessage] = []
    for index, raw in enumerate(body.input):
        item = _item(raw, index)
        match item:
            case InputMessage(role=role, content=content):
                text, shown = _text(content, f"input[{index}].content", images if role == "user" else None)
                messages.append(ChatMessage(role="system" if role == "developer" else role, content=text, images=shown or None))
            case FunctionCallItem():
                call = ToolCall(id=item.call_id, function=FunctionCall(name=item.name, arguments=item.arguments))
                last = messages[-1] if messages else None
                if last is not None and last.role == "assistant":
                    messages[-1] = ChatMessage(role="assistant", content=last.content, tool_calls=[*(last.tool_calls or []), call])
                else:
                    messages.append(ChatMessage(role="assistant", content="", tool_calls=[call]))
            case FunctionCallOutputItem():
                output = _text(item.output, f"input[{index}].output")[0]
                messages.append(ChatMessage(role="tool", content=output, tool_call_id=item.call_id))
    return messages


def _tools(body: ResponsesRequest) -> tuple[list[dict[str, Any]] | None, str | dict[str, Any] | None]:
    tools = None
    if body.tools:
        tools = []
        for index, tool in enumerate(body.tools):
            if tool.type != "function" or not tool.name:
                raise BadRequest(
                    f"the tool type `{tool.type}` is not supported by this gateway (at $.tools[{index}])", param=f"tools[{index}]"
                )
            function: dict[str, Any] = {"name": tool.name, "parameters": tool.parameters or {"type": "object", "properties": {}}}
            function |= {k: v for k, v in (("description", tool.description), ("strict", tool.strict)) if v is not None}
            tools.append({"type": "function", "function": function})
    choice = body.tool_choice
    names = [str(tool.name) for tool in body.tools or ()]
    if isinstance(choice, dict):
        if choice.get("type") != "function" or not isinstance(choice.get("name"), str):
            raise BadRequest("`tool_choice` may be none, auto, required or {type: function, name}", param="tool_choice")
        check_tool_choice(choice["name"], False, names, "tool_choice.name")
        return tools, {"type": "function", "function": {"name": choice["name"]}}
    check_tool_choice(None, choice == "required", names, "tool_choice")
    return tools, choice


def _response_format(body: ResponsesRequest) -> dict[str, Any] | None:
    form = body.text.format if body.text else None
    if form is None or form.type == "text":
        return None
    if form.type == "json_object":
        return {"type": "json_object"}
    if not form.name:
        raise BadRequest("`text.format` of type json_schema needs a `name`", param="text.format.name")
    spec = {"name": form.name, "schema": form.schema, "description": form.description, "strict": form.strict}
    return {"type": "json_schema", "json_schema": {k: v for k, v in spec.items() if v is not None}}


def to_platform(
    body: ResponsesRequest, earlier: list[ChatMessage], images: ImageRules
) -> tuple[list[ChatMessage], list[ChatMessage], GenerationParams]:
    """`(conversation, this request's input, settings)`; refuses what cannot be honoured, by name."""
    for name in _REFUSED:
        if getattr(body, name) not in (None, False):
            raise BadRequest(f"`{name}` is not supported by this gateway", code="unsupported_parameter", param=name)
    if body.reasoning and any(v is not None for v in body.reasoning.values()):
        raise BadRequest("`reasoning` is not supported by this gateway", code="unsupported_parameter", param="reasoning")
    if body.include:
        raise BadRequest("`include` is not supported by this gateway", code="unsupported_parameter", param="include")
    if body.truncation == "auto":
        raise BadRequest("`truncation: auto` is not supported by this gateway", code="unsupported_parameter", param="truncation")
    if body.text is not None and body.text.verbosity is not None:
        raise BadRequest("`text.verbosity` is not supported by this gateway", code="unsupported_parameter", param="text.verbosity")
    new = input_messages(body, images)
    system = [ChatMessage(role="system", content=body.instructions)] if body.instructions else []
    tools, tool_choice = _tools(body)
    params = GenerationParams(
        temperature=body.temperature,
        top_p=body.top_p,
        max_tokens=body.max_output_tokens,
        tools=tools,
        tool_choice=tool_choice if tools else None,
        parallel_tool_calls=body.parallel_tool_calls if tools else None,
        response_format=_response_format(body),
    )
    return [*system, *earlier, *new], [*earlier, *new], params


# --- Response ----------------------------------------------------------------------------------


class _Builder:
    """One response's items, built from the platform's events, and the Responses API's stream events on the way."""

    def __init__(self, response_id: str, created: int, body: ResponsesRequest) -> None:
        self.id = response_id
        self.created = created
        self.body = body
        self.model = body.model
        self.sequence = 0
        self.items: list[tuple[str, list[str], ToolCallDelta | None]] = []
        """`(item id, text or argument pieces, the call's first piece)` of each output item so far."""
        self.open: int | None = None
        """The platform tool call index of the open function call item; -1 for a message; None when none is open."""
        self.usage: TokenUsage | None = None
        self.reason = "stop"

    def event(self, name: str, data: dict[str, Any]) -> bytes:
        self.sequence += 1
        payload = json_encoder.encode({"type": name, "sequence_number": self.sequence - 1, **data})
        return b"event: " + name.encode() + b"\ndata: " + payload + b"\n\n"

    def _item(self, index: int) -> OutputItem:
        item_id, pieces, call = self.items[index]
        status = "in_progress" if index == len(self.items) - 1 and self.open is not None else "completed"
        if call is None:
            return OutputMessage(id=item_id, status=status, content=[OutputText(text="".join(pieces))])
        return OutputFunctionCall(id=item_id, status=status, call_id=call.id or "", name=call.name or "", arguments="".join(pieces))

    def text(self, text: str) -> list[bytes]:
        out = [] if self.open == -1 else self._begin(-1, None)
        index = len(self.items) - 1
        self.items[index][1].append(text)
        data = {"item_id": self.items[index][0], "output_index": index, "content_index": 0, "delta": text, "logprobs": []}
        return [*out, self.event("response.output_text.delta", data)]

    def tool(self, piece: ToolCallDelta) -> list[bytes]:
        out = []
        if piece.id is not None or self.open != piece.index:
            out = self._begin(piece.index, piece)
        index = len(self.items) - 1
        if piece.arguments:
            self.items[index][1].append(piece.arguments)
            data = {"item_id": self.items[index][0], "output_index": index, "delta": piece.arguments}
            out.append(self.event("response.function_call_arguments.delta", data))
        return out

    def _begin(self, key: int, call: ToolCallDelta | None) -> list[bytes]:
        out = self.close()
        index = len(self.items)
        self.items.append((f"{'fc' if call else 'msg'}_{self.id.removeprefix('resp_')}{index}", [], call))
        self.open = key
        item = msgspec.to_builtins(self._item(index))
        out.append(self.event("response.output_item.added", {"output_index": index, "item": item}))
        if call is None:
            part = {"type": "output_text", "text": "", "annotations": [], "logprobs": []}
            out.append(
                self.event("response.content_part.added", {"item_id": item["id"], "output_index": index, "content_index": 0, "part": part})
            )
        return out

    def close(self) -> list[bytes]:
        if self.open is None:
            return []
        self.open = None
        index = len(self.items) - 1
        item = self._item(index)
        out = []
        if isinstance(item, OutputMessage):
            text = item.content[0].text
            where = {"item_id": item.id, "output_index": index, "content_index": 0}
            out.append(self.event("response.output_text.done", {**where, "text": text, "logprobs": []}))
            out.append(self.event("response.content_part.done", {**where, "part": msgspec.to_builtins(item.content[0])}))
        else:
            out.append(
                self.event(
                    "response.function_call_arguments.done",
                    {"item_id": item.id, "output_index": index, "name": item.name, "arguments": item.arguments},
                )
            )
        out.append(self.event("response.output_item.done", {"output_index": index, "item": msgspec.to_builtins(item)}))
        return out

    def response(self, status: str, error: ResponseError | None = None) -> ResponseObject:
        body = self.body
        usage = None
        if self.usage is not None:
            usage = ResponseUsage(
                input_tokens=self.usage.input_tokens,
                input_tokens_details=InputTokensDetails(cached_tokens=self.usage.cached_tokens),
                output_tokens=self.usage.output_tokens,
                output_tokens_details=OutputTokensDetails(),
                total_tokens=self.usage.input_tokens + self.usage.output_tokens,
            )
        incomplete = None
        if status == "completed" and self.reason in ("length", "content_filter"):
            status = "incomplete"
            incomplete = IncompleteDetails(reason="max_output_tokens" if self.reason == "length" else "content_filter")
        return ResponseObject(
            id=self.id,
            created_at=self.created,
            status=status,  # type: ignore[arg-type]
            model=self.model,
            output=[self._item(i) for i in range(len(self.items))],
            usage=usage,
            error=error,
            incomplete_details=incomplete,
            instructions=body.instructions,
            max_output_tokens=body.max_output_tokens,
            metadata=body.metadata or {},
            parallel_tool_calls=body.parallel_tool_calls is not False,
            previous_response_id=body.previous_response_id,
            store=body.store is not False,
            temperature=body.temperature,
            top_p=body.top_p,
            text={"format": msgspec.to_builtins(body.text.format)} if body.text and body.text.format else {"format": {"type": "text"}},
            tool_choice=body.tool_choice or "auto",
            tools=msgspec.to_builtins(body.tools) if body.tools else [],
            user=body.user,
        )

    def output_messages(self) -> list[ChatMessage]:
        """The output as one assistant turn, for the conversation that a later response continues."""
        text = "".join(piece for _, pieces, call in self.items if call is None for piece in pieces)
        calls = [
            ToolCall(id=call.id or "", function=FunctionCall(name=call.name or "", arguments="".join(pieces)))
            for _, pieces, call in self.items
            if call is not None
        ]
        return [ChatMessage(role="assistant", content=text, tool_calls=calls or None)]

    def restart(self) -> None:
        self.items.clear()
        self.open = None

    def render(self, batch: Batch) -> tuple[list[bytes], str | None]:
        """One batch's stream events, and `completed` or `failed` when the response ended in it."""
        out: list[bytes] = []
        for _, event in batch:
            match event:
                case Started(model=model):
                    self.model = model
                case Delta(text=text):
                    out += self.text(text)
                case ToolCallDelta():
                    out += self.tool(event)
                case Usage(usage=usage):
                    self.usage = usage
                case Restart():
                    if self.items:
                        return [
                            *out,
                            *self._failed("upstream_error", "the generation restarted after output was sent; retry the request"),
                        ], "failed"
                case Error(code=code, message=message):
                    return [*out, *self._failed(code, message)], "failed"
                case Done(reason=reason):
                    self.reason = reason
                    out += self.close()
                    final = self.response("completed")
                    name = "response.completed" if final.status == "completed" else "response.incomplete"
                    out.append(self.event(name, {"response": msgspec.to_builtins(final)}))
                    return out, "completed"
        return out, None

    def _failed(self, code: str, message: str) -> list[bytes]:
        self.open = None
        failed = self.response("failed", ResponseError(code=code, message=message))
        return [self.event("response.failed", {"response": msgspec.to_builtins(failed)})]


async def _earlier(state: State, owner: str, response_id: str | None) -> list[ChatMessage]:
    if response_id is None:
        return []
    raw = await state.redis.get(state.redis_keys.stored_response(owner, response_id))
    if raw is None:
        raise NotFound(f"the response `{response_id}` does not exist (or has expired)", param="previous_response_id")
    return _stored_decoder.decode(raw).messages


async def _store(state: State, owner: str, builder: _Builder, conversation: list[ChatMessage], response: ResponseObject) -> None:
    """Keep the response for `GET` and `previous_response_id`; a Redis away costs the copy, not the answer."""
    record = StoredResponse(response=response, messages=[*conversation, *builder.output_messages()])
    key = state.redis_keys.stored_response(owner, response.id)
    try:
        await state.redis.set(key, json_encoder.encode(record), ex=state.settings.chat.responses_ttl_s)
    except (redis.exceptions.RedisError, OSError) as exc:
        log.warning("responses.store_failed", response_id=response.id, error=str(exc))


@post("/v1/responses", tags=["openai"], status_code=200)
async def create_response(request: Request[Principal, Any, Any], state: State) -> Response[Any]:
    """Create a response (OpenAI's Responses API), streamed (`stream: true`) or whole, with any configured model."""
    body = decode_body(await request.body(), _decoder, "`model` and `input`")
    owner = request.user.owner
    messages, conversation, params = to_platform(body, await _earlier(state, owner, body.previous_response_id), state.images)
    generation = await start(request, state, body.model, messages, params)
    builder = _Builder(f"resp_{generation.chat.request_id}", int(generation.chat.enqueued_at), body)
    store = body.store is not False
    if body.stream:
        return Stream(
            _sse(state, owner, builder, generation, conversation if store else None),
            media_type="text/event-stream",
            headers={**_SSE_HEADERS, **generation.headers},
        )
    async for event in generation.events():
        match event:
            case Restart():
                builder.restart()
            case Error(code=code, message=message, retry_after=retry_after):
                raise UpstreamFailure(code, message, retry_after)
            case _:
                builder.render([(b"", event)])
    response = builder.response("completed")
    if store:
        await _store(state, owner, builder, conversation, response)
    return Response(response, headers=generation.headers)


async def _sse(
    state: State, owner: str, builder: _Builder, generation: Generation, conversation: list[ChatMessage] | None
) -> AsyncIterator[bytes]:
    """`response.created`, `response.in_progress`, the items' events, then `response.completed` (or `.incomplete`,
    `.failed`); a client that leaves before the end cancels the generation."""
    ended = False
    try:
        started = builder.response("in_progress")
        yield builder.event("response.created", {"response": msgspec.to_builtins(started)}) + builder.event(
            "response.in_progress", {"response": msgspec.to_builtins(started)}
        )
        async for batch in generation.batches():
            if batch is KEEPALIVE:
                yield b": keepalive\n\n"
                continue
            out, end = builder.render(batch)
            if end is not None:
                ended = True  # the generation is over: a client leaving now cancels nothing
                if end == "completed" and conversation is not None:
                    # Kept before the last events go out: a client that has seen `response.completed` can continue it.
                    await _store(state, owner, builder, conversation, builder.response("completed"))
            if out:
                yield b"".join(out)
            if end is not None:
                break
    finally:
        if not ended:
            log.info("stream.abandoned", request_id=generation.chat.request_id)
            generation.cancel()


@get("/v1/responses/{response_id:str}", tags=["openai"])
async def get_response(request: Request[Principal, Any, Any], state: State, response_id: FromPath[str]) -> ResponseObject:
    """A stored response of this key's owner."""
    raw = await state.redis.get(state.redis_keys.stored_response(request.user.owner, response_id))
    if raw is None:
        raise NotFound(f"the response `{response_id}` does not exist (or has expired)")
    return _stored_decoder.decode(raw).response


@delete("/v1/responses/{response_id:str}", tags=["openai"], status_code=200)
async def delete_response(request: Request[Principal, Any, Any], state: State, response_id: FromPath[str]) -> DeletedResponse:
    """Forget a stored response: it can no longer be fetched or continued."""
    if not await state.redis.delete(state.redis_keys.stored_response(request.user.owner, response_id)):
        raise NotFound(f"the response `{response_id}` does not exist (or has expired)")
    return DeletedResponse(id=response_id)


RESPONSES_ROUTES = [create_response, get_response, delete_response]
