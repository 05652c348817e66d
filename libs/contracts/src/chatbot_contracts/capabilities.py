"""What each provider can honour, so that what it cannot is refused with a clear 400, never dropped."""

from __future__ import annotations

from .chat import GenerationParams
from .registry import ModelSpec, Provider

_ALL = frozenset({"temperature", "top_p", "max_tokens", "stop", "seed", "frequency_penalty", "presence_penalty"})
SUPPORTED_PARAMS: dict[Provider, frozenset[str]] = {
    "openai": _ALL,
    "anthropic": frozenset({"temperature", "top_p", "max_tokens", "stop"}),
    "gemini": _ALL,
    "ollama": _ALL,
    "llamacpp": _ALL,
}
MAX_TEMPERATURE: dict[Provider, float] = {"anthropic": 1.0}
MAX_STOP_SEQUENCES: dict[Provider, int] = {"gemini": 5}


def refusal(alias: str, spec: ModelSpec, params: GenerationParams) -> tuple[str, str] | None:
    """`(param, message)` for the first setting this model's provider cannot honour, or None."""
    for name in sorted(_ALL - SUPPORTED_PARAMS[spec.provider]):
        if getattr(params, name) is not None:
            return name, f"`{name}` is not supported by model `{alias}` (provider {spec.provider})"
    limit = MAX_TEMPERATURE.get(spec.provider)
    if limit is not None and params.temperature is not None and params.temperature > limit:
        return "temperature", f"model `{alias}` (provider {spec.provider}) takes `temperature` from 0 to {limit:g}"
    stops = MAX_STOP_SEQUENCES.get(spec.provider)
    if stops is not None and params.stop is not None and len(params.stop) > stops:
        return "stop", f"model `{alias}` (provider {spec.provider}) takes at most {stops} stop sequences"
    return None
