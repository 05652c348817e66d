"""OpenAI requests into platform `ChatRequest`s, and the platform's stream events back into OpenAI chunks."""

from __future__ import annotations

from typing import Any

import msgspec

from chatbot_contracts import ChatMessage, GenerationParams, ImagePart, ToolCall, json_encoder

from ..errors import BadRequest
from ..images import ImageRules
from ..tools import check_tool_choice
from .schemas import (
    AssistantMessage,
    ChatCompletionRequest,
    Content,
    DeveloperMessage,
    ImageUrlPart,
    Message,
    NamedToolChoice,
    ResponseFormat,
    ResponseFormatText,
    SystemMessage,
    TextPart,
    ToolMessage,
    UserMessage,
)

_UNSUPPORTED = (
    "functions",
    "function_call",
    "audio",
    "prediction",
    "web_search_options",
    "reasoning_effort",
    "verbosity",
    "top_logprobs",
)
_calls_decoder = msgspec.json.Decoder(list[ToolCall])


def _unsupported(param: str, what: str) -> BadRequest:
    return BadRequest(f"{what} is not supported by this gateway", code="unsupported_parameter", param=param)


def _text(content: Content | None, param: str, images: ImageRules | None = None) -> tuple[str, list[ImagePart]]:
    """A content's text, and its images where `images` (the rules) says they may be (user turns)."""
    if content is None:
        return "", []
    if isinstance(content, str):
        return content, []
    texts: list[str] = []
    parts: list[ImagePart] = []
    for index, part in enumerate(content):
        if isinstance(part, TextPart):
            texts.append(part.text)
        elif isinstance(part, ImageUrlPart) and images is not None:
            url, detail = part.image_url.get("url"), part.image_url.get("detail")
            if not isinstance(url, str) or not (detail is None or isinstance(detail, str)):
                raise BadRequest(
                    f"an image_url part needs `url` (and may have `detail`) (at $.{param}[{index}])", param=f"{param}[{index}]"
                )
            parts.append(images.part(url, f"{param}[{index}].image_url.url", detail))
        else:
            kind = type(part).__struct_config__.tag
            raise _unsupported(f"{param}[{index}]", f"`{kind}` content (at $.{param}[{index}])")
    return "\n".join(texts), parts


def _message(message: Message, index: int, images: ImageRules) -> ChatMessage:
    param = f"messages[{index}].content"
    match message:
        case SystemMessage() | DeveloperMessage():
            return ChatMessage(role="system", content=_text(message.content, param)[0], name=message.name)
        case UserMessage():
            text, parts = _text(message.content, param, images)
            return ChatMessage(role="user", content=text, name=message.name, images=parts or None)
        case AssistantMessage():
            if message.function_call:
                raise _unsupported(f"messages[{index}].function_call", "`function_call` (use `tool_calls`)")
            calls = None
            if message.tool_calls:
                try:
                    calls = _calls_decoder.decode(json_encoder.encode(message.tool_calls))
                except msgspec.ValidationError as exc:
                    raise BadRequest(
                        f"invalid request: {exc} (in $.messages[{index}].tool_calls)", param=f"messages[{index}].tool_calls"
                    ) from exc
            return ChatMessage(role="assistant", content=_text(message.content, param)[0], name=message.name, tool_calls=calls)
        case ToolMessage():
            return ChatMessage(role="tool", content=_text(message.content, param)[0], tool_call_id=message.tool_call_id)
    raise AssertionError(message)


def structured_output(response_format: ResponseFormat | None) -> dict[str, Any] | None:
    """The platform's form of a `response_format` (None for plain text)."""
    if response_format is None or isinstance(response_format, ResponseFormatText):
        return None
    return msgspec.to_builtins(response_format)  # type: ignore[no-any-return]


def to_platform(body: ChatCompletionRequest, images: ImageRules) -> tuple[list[ChatMessage], GenerationParams]:
    """The messages and sampling settings of an OpenAI request; refuses what cannot be honoured."""
    for param in _UNSUPPORTED:
        if getattr(body, param) is not None:
            raise _unsupported(param, f"`{param}`")
    if body.n not in (None, 1):
        raise _unsupported("n", "`n` other than 1")
    if body.logprobs:
        raise _unsupported("logprobs", "`logprobs`")
    if body.logit_bias:
        raise _unsupported("logit_bias", "`logit_bias`")
    if body.modalities and body.modalities != ["text"]:
        raise _unsupported("modalities", "output other than text")
    stop = [body.stop] if isinstance(body.stop, str) else body.stop
    choice = body.tool_choice
    if choice is not None:
        forced = choice.function.name if isinstance(choice, NamedToolChoice) else None
        check_tool_choice(forced, choice == "required", [tool.function.name for tool in body.tools or ()], "tool_choice")
    params = GenerationParams(
        temperature=body.temperature,
        top_p=body.top_p,
        max_tokens=body.max_completion_tokens or body.max_tokens,
        stop=stop or None,
        seed=body.seed,
        frequency_penalty=body.frequency_penalty,
        presence_penalty=body.presence_penalty,
        tools=msgspec.to_builtins(body.tools) if body.tools else None,
        tool_choice=msgspec.to_builtins(choice) if isinstance(choice, NamedToolChoice) else choice,
        parallel_tool_calls=body.parallel_tool_calls if body.tools else None,
        response_format=structured_output(body.response_format),
    )
    return [_message(message, i, images) for i, message in enumerate(body.messages)], params
