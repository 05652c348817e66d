"""Who is calling: API keys in `Authorization: Bearer` (or Anthropic's `x-api-key`)."""

from __future__ import annotations

import hashlib
import hmac

import msgspec
from litestar.connection import ASGIConnection
from litestar.middleware import AbstractAuthenticationMiddleware, AuthenticationResult

from .errors import Unauthorized

PUBLIC = {"exclude_from_auth": True}
"""Route `opt` of the public routes (health checks, the schema, the web UI); every other route needs a key."""


class Principal(msgspec.Struct, frozen=True, kw_only=True):
    """The owner of the key a request came with."""

    key_id: str
    owner: str
    is_admin: bool = False


def _digest(secret: str) -> bytes:
    return hashlib.sha256(secret.encode()).digest()


class KeyStore:
    """Resolves API keys to principals. Until the key store of its own lands, only the admin key exists."""

    def __init__(self, admin_key: str) -> None:
        self._admin_digest = _digest(admin_key)
        self._admin = Principal(key_id="admin", owner="admin", is_admin=True)

    def lookup(self, secret: str) -> Principal | None:
        if hmac.compare_digest(_digest(secret), self._admin_digest):
            return self._admin
        return None


def presented_key(connection: ASGIConnection) -> str | None:  # type: ignore[type-arg]
    header = connection.headers.get("authorization")
    if header:
        scheme, _, token = header.partition(" ")
        return token.strip() if scheme.lower() == "bearer" and token.strip() else None
    return connection.headers.get("x-api-key") or None


class KeyAuthMiddleware(AbstractAuthenticationMiddleware):
    async def authenticate_request(self, connection: ASGIConnection) -> AuthenticationResult:  # type: ignore[type-arg]
        secret = presented_key(connection)
        if secret is None:
            raise Unauthorized("missing API key: send the header 'Authorization: Bearer <key>'")
        principal = connection.app.state.key_store.lookup(secret)
        if principal is None:
            raise Unauthorized("invalid API key")
        return AuthenticationResult(user=principal, auth=principal.key_id)
