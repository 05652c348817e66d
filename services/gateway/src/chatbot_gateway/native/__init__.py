"""The native API: stored conversations and the native event protocol."""

from .client import ServiceClient
from .routes import ROUTES

__all__ = ["ROUTES", "ServiceClient"]
