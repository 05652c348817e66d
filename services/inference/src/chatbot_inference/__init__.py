"""Chatbot-LLM inference workers."""

from .app import WorkerApp
from .settings import Settings
from .worker import Worker

__all__ = ["Settings", "Worker", "WorkerApp"]
