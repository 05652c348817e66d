"""The native API: stored conversations, knowledge bases and the native event protocol."""

from .client import ServiceClient
from .knowledge import ROUTES as KNOWLEDGE_ROUTES
from .routes import ROUTES as CONVERSATION_ROUTES

ROUTES = [*CONVERSATION_ROUTES, *KNOWLEDGE_ROUTES]

__all__ = ["ROUTES", "ServiceClient"]
