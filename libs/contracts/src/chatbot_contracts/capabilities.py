"""What each provider can honour, so that what it cannot is refused with a clear 400, never dropped."""

from __future__ import annotations

from collections.abc import Sequence

from .chat import ChatMessage, GenerationParams
from .registry import ModelSpec, Provider

_SAMPLING = frozenset({"temperature", "top_p", "max_tokens", "stop", "seed", "frequency_penalty", "presence_penalty"})
_TOOLS = frozenset({"tools", "tool_choice", "parallel_tool_calls"})
_ALL = _SAMPLING | _TOOLS | {"response_format", "dimensions", "thinking"}
SUPPORTED_PARAMS: dict[Provider, frozenset[str]] = {
    "openai": _ALL - {"thinking"},
    "anthropic": frozenset({"temperature", "top_p", "max_tokens", "stop", "response_format", "thinking"}) | _TOOLS,
    "gemini": _ALL - {"thinking"},
    "ollama": _ALL - {"tool_choice", "thinking"},
    "llamacpp": _SAMPLING,
    "bert": frozenset(),
}
MAX_TEMPERATURE: dict[Provider, float] = {"anthropic": 1.0}
MAX_STOP_SEQUENCES: dict[Provider, int] = {"gemini": 5}
CANNOT_SERIALIZE_TOOLS: frozenset[Provider] = frozenset({"gemini", "ollama"})
"""Providers that may call several tools at once and have no switch to stop them: `parallel_tool_calls: false` is refused."""
NO_IMAGES: frozenset[Provider] = frozenset({"llamacpp", "bert"})
INLINE_IMAGES_ONLY: frozenset[Provider] = frozenset({"ollama"})
"""Providers that take an image's bytes, not its URL: `https://` images are refused."""
FORCED_TOOL_SCHEMA: frozenset[Provider] = frozenset({"anthropic"})
"""Providers whose structured output is a forced tool call: the schema must describe an object, and no other tools may come with it."""


def refusal(alias: str, spec: ModelSpec, params: GenerationParams, messages: Sequence[ChatMessage] = ()) -> tuple[str, str] | None:
    """`(param, message)` for the first setting this model's provider cannot honour, or None."""
    provider = spec.provider
    where = f"model `{alias}` (provider {provider})"
    for name in sorted(_ALL - SUPPORTED_PARAMS[provider]):
        value = getattr(params, name)
        if value is not None and not (name == "tool_choice" and value in ("auto", "none")):
            return name, f"`{name}` is not supported by {where}"
    if "tools" not in SUPPORTED_PARAMS[provider] and any(m.tool_calls or m.role == "tool" for m in messages):
        return "messages", f"tool calls in the conversation are not supported by {where}"
    if any(m.images for m in messages):
        if provider in NO_IMAGES:
            return "messages", f"images are not supported by {where}"
        if provider in INLINE_IMAGES_ONLY and any(not i.url.startswith("data:") for m in messages for i in m.images or ()):
            return "messages", f"{where} takes images only inline (data: URLs), not by https:// URL"
    if params.parallel_tool_calls is False and provider in CANNOT_SERIALIZE_TOOLS:
        return "parallel_tool_calls", f"`parallel_tool_calls: false` is not supported by {where}: it may always call several tools at once"
    if params.response_format is not None and provider in FORCED_TOOL_SCHEMA:
        if params.tools:
            return "response_format", f"{where} takes `response_format` or `tools`, not both (its structured output is a forced tool call)"
        schema = (params.response_format.get("json_schema") or {}).get("schema")
        if schema is not None and schema.get("type", "object") != "object":
            return "response_format", f"{where} takes a `response_format` schema only of `type: object`"
    limit = MAX_TEMPERATURE.get(provider)
    if limit is not None and params.temperature is not None and params.temperature > limit:
        return "temperature", f"model `{alias}` (provider {provider}) takes `temperature` from 0 to {limit:g}"
    stops = MAX_STOP_SEQUENCES.get(provider)
    if stops is not None and params.stop is not None and len(params.stop) > stops:
        return "stop", f"model `{alias}` (provider {provider}) takes at most {stops} stop sequences"
    return None
