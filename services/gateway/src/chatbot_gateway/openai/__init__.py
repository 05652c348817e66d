"""The OpenAI-compatible API."""

from .embeddings import create_embeddings
from .responses import RESPONSES_ROUTES
from .routes import chat_completions, list_models

__all__ = ["RESPONSES_ROUTES", "chat_completions", "create_embeddings", "list_models"]
