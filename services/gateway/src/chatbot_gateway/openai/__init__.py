"""The OpenAI-compatible API."""

from .routes import chat_completions, list_models

__all__ = ["chat_completions", "list_models"]
