"""What each provider can honour, so that what it cannot is refused with a clear 400, never dropped."""

from __future__ import annotations

from collections.abc import Sequence

from .chat import ChatMessage, GenerationParams
from .registry import ModelSpec, Provider

_SAMPLING = frozenset({"temperature", "top_p", "max_tokens", "stop", "seed", "frequency_penalty", "presence_penalty"})
_TOOLS = frozenset({"tools", "tool_choice", "parallel_tool_calls"})
_ALL = _SAMPLING | _TOOLS
SUPPORTED_PARAMS: dict[Provider, frozenset[str]] = {
    "openai": _ALL,
    "anthropic": frozenset({"temperature", "top_p", "max_tokens", "stop"}),
    "gemini": _SAMPLING,
    "ollama": _SAMPLING,
    "llamacpp": _SAMPLING,
}
MAX_TEMPERATURE: dict[Provider, float] = {"anthropic": 1.0}
MAX_STOP_SEQUENCES: dict[Provider, int] = {"gemini": 5}


def refusal(alias: str, spec: ModelSpec, params: GenerationParams, messages: Sequence[ChatMessage] = ()) -> tuple[str, str] | None:
    """`(param, message)` for the first setting this model's provider cannot honour, or None."""
    for name in sorted(_ALL - SUPPORTED_PARAMS[spec.provider]):
        if getattr(params, name) is not None:
            return name, f"`{name}` is not supported by model `{alias}` (provider {spec.provider})"
    if "tools" not in SUPPORTED_PARAMS[spec.provider] and any(m.tool_calls or m.role == "tool" for m in messages):
        return "messages", f"tool calls in the conversation are not supported by model `{alias}` (provider {spec.provider})"
    limit = MAX_TEMPERATURE.get(spec.provider)
    if limit is not None and params.temperature is not None and params.temperature > limit:
        return "temperature", f"model `{alias}` (provider {spec.provider}) takes `temperature` from 0 to {limit:g}"
    stops = MAX_STOP_SEQUENCES.get(spec.provider)
    if stops is not None and params.stop is not None and len(params.stop) > stops:
        return "stop", f"model `{alias}` (provider {spec.provider}) takes at most {stops} stop sequences"
    return None
