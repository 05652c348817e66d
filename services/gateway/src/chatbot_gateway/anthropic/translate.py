"""Anthropic Messages requests into the platform's messages and settings.

What only Anthropic's models understand travels along and is used by them alone: `thinking` (refused for a model
of another provider), and `metadata`, `cache_control` and `anthropic-beta` (dropped for the others, which have no
such thing). A thinking block sent back with an assistant turn goes back to Anthropic as it came.
"""

from __future__ import annotations

from typing import Any

from chatbot_contracts import ChatMessage, FunctionCall, GenerationParams, ImagePart, ThinkingBlock, ToolCall, json_encoder

from ..errors import BadRequest
from ..images import ImageRules
from ..tools import check_tool_choice
from .schemas import Block, MessageParam, MessagesRequest

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


def _mark(blocks: str | list[Block] | None) -> dict[str, Any] | None:
    """The last `cache_control` among the blocks (a cache breakpoint at the end of their turn)."""
    if not isinstance(blocks, list):
        return None
    return next((block.cache_control for block in reversed(blocks) if block.cache_control), None)


def _turn(message: MessageParam, where: str, images: ImageRules) -> list[ChatMessage]:
    """One Anthropic turn as platform messages: an assistant turn with its reasoning and tool calls, or a user turn's
    tool results (one `tool` message each) followed by its text and images."""
    if isinstance(message.content, str):
        return [ChatMessage(role=message.role, content=message.content)]
    texts: list[str] = []
    calls: list[ToolCall] = []
    results: list[ChatMessage] = []
    shown: list[ImagePart] = []
    thoughts: list[ThinkingBlock] = []
    assistant = message.role == "assistant"
    for index, block in enumerate(message.content):
        at = f"{where}[{index}]"
        if block.type == "text" and block.text is not None:
            texts.append(block.text)
        elif block.type == "tool_use" and assistant and block.id and block.name:
            arguments = json_encoder.encode(block.input or {}).decode()
            calls.append(ToolCall(id=block.id, function=FunctionCall(name=block.name, arguments=arguments)))
        elif block.type == "thinking" and assistant and block.thinking is not None:
            thoughts.append(ThinkingBlock(thinking=block.thinking, signature=block.signature))
        elif block.type == "redacted_thinking" and assistant and block.data is not None:
            thoughts.append(ThinkingBlock(redacted=block.data))
        elif block.type == "image" and not assistant:
            shown.append(_image(block, at, images))
        elif block.type == "tool_result" and not assistant and block.tool_use_id:
            output = _text(block.content, f"{at}.content")
            results.append(
                ChatMessage(role="tool", content=f"Error: {output}" if block.is_error else output, tool_call_id=block.tool_use_id)
            )
        else:
            raise BadRequest(
                f"`{block.type}` content blocks are not supported in a {message.role} turn by this gateway (at $.{at})", param=at
            )
    mark = _mark(message.content)
    if assistant:
        return [
            ChatMessage(role="assistant", content="\n".join(texts), tool_calls=calls or None, thinking=thoughts or None, cache_control=mark)
        ]
    if texts or shown or not results:
        return [*results, ChatMessage(role="user", content="\n".join(texts), images=shown or None, cache_control=mark)]
    return [*results[:-1], ChatMessage(role="tool", content=results[-1].content, tool_call_id=results[-1].tool_call_id, cache_control=mark)]


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
    names = [tool.name for tool in body.tools or ()]
    if choice.type == "tool":
        if not choice.name:
            raise BadRequest("`tool_choice` of type `tool` needs the tool's `name`", param="tool_choice.name")
        check_tool_choice(choice.name, False, names, "tool_choice.name")
        return tools, {"type": "function", "function": {"name": choice.name}}, parallel
    check_tool_choice(None, choice.type == "any", names, "tool_choice")
    return tools, _TOOL_CHOICE[choice.type], parallel


def to_platform(body: MessagesRequest, images: ImageRules, betas: str | None = None) -> tuple[list[ChatMessage], GenerationParams]:
    """The messages and settings of an Anthropic request (`betas`: its `anthropic-beta` header); refuses what cannot be
    honoured."""
    for name in _REFUSED:
        if getattr(body, name) is not None:
            raise BadRequest(f"`{name}` is not supported by this gateway", param=name)
    system = [ChatMessage(role="system", content=_text(body.system, "system"), cache_control=_mark(body.system))] if body.system else []
    messages = system
    for index, message in enumerate(body.messages):
        messages += _turn(message, f"messages[{index}].content", images)
    tools, tool_choice, parallel = _tools(body)
    thinking = body.thinking if body.thinking is not None and body.thinking.get("type") != "disabled" else None
    metadata = {key: value for key, value in (body.metadata or {}).items() if isinstance(value, str)} or None
    tools_mark = next((tool.cache_control for tool in reversed(body.tools or []) if tool.cache_control), None)
    beta_names = [beta.strip() for beta in (betas or "").split(",") if beta.strip()]
    params = GenerationParams(
        temperature=body.temperature,
        top_p=body.top_p,
        max_tokens=body.max_tokens,
        stop=body.stop_sequences,
        tools=tools,
        tool_choice=tool_choice if tools else None,
        parallel_tool_calls=parallel if tools else None,
        thinking=thinking,
        metadata=metadata,
        betas=beta_names or None,
        tools_cache_control=tools_mark if tools else None,
    )
    return messages, params
