"""The Chatbot-LLM gateway: the platform's public HTTP API."""

from .app import create_app
from .settings import Settings

__all__ = ["Settings", "create_app"]
