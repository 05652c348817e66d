"""Chatbot-LLM inference workers."""

from .app import create_app
from .settings import Settings
from .worker import Worker

__all__ = ["Settings", "Worker", "create_app"]
