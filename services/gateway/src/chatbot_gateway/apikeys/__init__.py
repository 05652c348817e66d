"""API keys and their owners."""

from .routes import ROUTES
from .store import KeyStore

__all__ = ["ROUTES", "KeyStore"]
