"""Provider adapters, one module each, behind the vendor-neutral interface of `base`."""

from __future__ import annotations

import aiohttp

from .anthropic import AnthropicProvider
from .base import Embedder, Provider, ProviderError, ProviderEvent
from .bert import BertProvider
from .gemini import GeminiProvider
from .llamacpp import LlamaCppProvider
from .ollama import OllamaProvider
from .openai import OpenAIProvider


def build_providers(http: aiohttp.ClientSession) -> dict[str, Provider]:
    """Every adapter this worker can run, by the registry's `provider` name."""
    return {
        "openai": OpenAIProvider(http),
        "anthropic": AnthropicProvider(http),
        "gemini": GeminiProvider(http),
        "ollama": OllamaProvider(http),
        "llamacpp": LlamaCppProvider(),
        "bert": BertProvider(),
    }


__all__ = [
    "AnthropicProvider",
    "BertProvider",
    "Embedder",
    "GeminiProvider",
    "LlamaCppProvider",
    "OllamaProvider",
    "OpenAIProvider",
    "Provider",
    "ProviderError",
    "ProviderEvent",
    "build_providers",
]
