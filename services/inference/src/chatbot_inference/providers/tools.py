"""Tools, structured output and vectors in the platform's form (OpenAI's), read the same way by every adapter."""

from __future__ import annotations

import struct
import uuid
from collections.abc import Sequence
from typing import Any

import msgspec

from chatbot_contracts import ChatMessage, ToolCall

from .base import ProviderError

EMPTY_OBJECT_SCHEMA: dict[str, Any] = {"type": "object", "properties": {}}
_object_decoder = msgspec.json.Decoder(dict[str, Any])


class Function(msgspec.Struct, frozen=True):
    """One function tool the client offered."""

    name: str
    description: str | None
    parameters: dict[str, Any]


def functions(tools: Sequence[dict[str, Any]] | None) -> list[Function]:
    """The function tools of `params.tools` (the gateway admits only `type: function`)."""
    out = []
    for tool in tools or ():
        function = tool.get("function") or {}
        out.append(Function(function.get("name", ""), function.get("description"), function.get("parameters") or EMPTY_OBJECT_SCHEMA))
    return out


def forced_function(tool_choice: str | dict[str, Any] | None) -> str | None:
    """The name in `{"type": "function", "function": {"name": …}}`, or None for `auto`, `none`, `required`."""
    if isinstance(tool_choice, dict):
        return str((tool_choice.get("function") or {}).get("name", "")) or None
    return None


def arguments(call: ToolCall, provider: str) -> dict[str, Any]:
    """A call's arguments as the object that providers other than OpenAI take."""
    try:
        return _object_decoder.decode(call.function.arguments or "{}")
    except msgspec.MsgspecError as exc:
        raise ProviderError(
            "bad_request", f"{provider}: the arguments of tool call `{call.id}` are not a JSON object: {call.function.arguments[:200]!r}"
        ) from exc


def names_by_call(messages: Sequence[ChatMessage]) -> dict[str, str]:
    """The function name of every tool call in the conversation, by call id (results name their call only by id)."""
    return {call.id: call.function.name for message in messages for call in message.tool_calls or ()}


def json_schema(response_format: dict[str, Any] | None) -> tuple[str, dict[str, Any] | None] | None:
    """`(name, schema)` of a structured-output request (schema None for `json_object`); None for plain text."""
    if not response_format:
        return None
    if response_format.get("type") == "json_object":
        return "json_object", None
    spec = response_format.get("json_schema") or {}
    return str(spec.get("name") or "json_answer"), spec.get("schema")


def check_count(vectors: int, inputs: int, provider: str) -> None:
    """A provider must answer every input: a short (or long) batch would misplace vectors."""
    if vectors != inputs:
        raise ProviderError("upstream_error", f"{provider}: {vectors} embeddings for {inputs} inputs", upstream=True)


def new_call_id() -> str:
    """An id for a call the provider gave none (Gemini, Ollama), in OpenAI's form."""
    return f"call_{uuid.uuid4().hex[:24]}"


def float32_bytes(values: Sequence[float]) -> bytes:
    """A vector as the platform carries it: float32, little-endian."""
    return struct.pack(f"<{len(values)}f", *values)


def estimated_tokens(text: str) -> int:
    """A provider-independent estimate (about four characters a token) where a provider reports no usage."""
    return max(1, (len(text) + 3) // 4) if text else 0
