"""The Anthropic-compatible API."""

from .routes import messages

__all__ = ["messages"]
