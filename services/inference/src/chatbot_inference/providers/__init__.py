"""Provider adapters, one module each, behind the vendor-neutral interface of `base`."""

from __future__ import annotations

import httpx

from .base import Provider, ProviderError, ProviderEvent
from .openai import OpenAIProvider


def build_providers(http: httpx.AsyncClient) -> dict[str, Provider]:
    """Every adapter this worker can run, by the registry's `provider` name."""
    return {"openai": OpenAIProvider(http)}


__all__ = ["OpenAIProvider", "Provider", "ProviderError", "ProviderEvent", "build_providers"]
