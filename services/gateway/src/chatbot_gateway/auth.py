"""Who is calling: API keys in `Authorization: Bearer` (or Anthropic's `x-api-key`)."""

from __future__ import annotations

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
    models: tuple[str, ...] | None = None
    """The aliases the key may use (None: every one)."""
    rpm: int | None = None
    tpm: int | None = None
    budget_usd: float | None = None
    budget_period: str | None = None
    owner_rpm: int | None = None
    """The owner's requests per minute over all its keys."""
    owner_tpm: int | None = None

    def may_use(self, alias: str) -> bool:
        return self.models is None or alias in self.models


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
        principal = await connection.app.state.key_store.lookup(secret)
        if principal is None:
            raise Unauthorized("invalid API key")
        return AuthenticationResult(user=principal, auth=principal.key_id)
