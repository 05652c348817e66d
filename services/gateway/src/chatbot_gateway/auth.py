"""Who is calling: API keys in `Authorization: Bearer` (or Anthropic's `x-api-key`)."""

from __future__ import annotations

import msgspec
import redis.asyncio as aioredis
import redis.exceptions
from litestar.connection import ASGIConnection
from litestar.middleware import AbstractAuthenticationMiddleware, AuthenticationResult

from chatbot_contracts import Keys

from .errors import TooManyFailures, Unauthorized

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
    max_running: int | None = None
    """Requests the key may have running at once (None: the gateway's default)."""
    max_streams: int | None = None
    """Streams the key may have open at once, over every gateway (None: the gateway's default)."""

    def may_use(self, alias: str) -> bool:
        return self.models is None or alias in self.models


def presented_key(connection: ASGIConnection) -> str | None:  # type: ignore[type-arg]
    header = connection.headers.get("authorization")
    if header:
        scheme, _, token = header.partition(" ")
        return token.strip() if scheme.lower() == "bearer" and token.strip() else None
    return connection.headers.get("x-api-key") or None


def client_address(connection: ASGIConnection, trusted_header: str) -> str:  # type: ignore[type-arg]
    """The caller's address: the last hop a trusted proxy wrote into `trusted_header` when one is configured, else the peer's."""
    if trusted_header and (forwarded := connection.headers.get(trusted_header)):
        return forwarded.rsplit(",", 1)[-1].strip()[:64]
    return connection.client.host if connection.client else "unknown"


class AuthFailures:
    """Unknown keys presented per client address and minute, counted in Redis (every gateway replica together).

    Past the bound an address gets 429 with Retry-After, and its unknown keys are no longer looked up.
    """

    def __init__(self, redis: aioredis.Redis, keys: Keys, per_minute: int) -> None:
        self._redis = redis
        self._keys = keys
        self._per_minute = per_minute

    def _refusal(self, ttl_s: int) -> TooManyFailures:
        retry = ttl_s if 0 < ttl_s <= 60 else 60  # the count's own expiry: the minute from the first failure
        return TooManyFailures(
            f"too many requests with an invalid API key from this address (at most {self._per_minute} a minute); retry in {retry}s",
            headers={"Retry-After": str(retry)},
        )

    async def check(self, address: str) -> None:
        """Refuse an address already past its bound, before anything is looked up for it (while Redis answers: an
        outage must not lock out valid keys)."""
        if not self._per_minute:
            return
        key = self._keys.auth_failures(address)
        pipe = self._redis.pipeline(transaction=False)
        pipe.get(key)
        pipe.ttl(key)
        try:
            failures, ttl_s = await pipe.execute()
        except (redis.exceptions.RedisError, OSError):
            return
        if int(failures or 0) >= self._per_minute:
            raise self._refusal(int(ttl_s))

    async def count(self, address: str) -> None:
        """Count one failure; refuse with 429 (rather than 401) once past the bound."""
        if not self._per_minute:
            return
        key = self._keys.auth_failures(address)
        pipe = self._redis.pipeline(transaction=False)
        pipe.incr(key)
        pipe.expire(key, 60, nx=True)
        pipe.ttl(key)
        try:
            failures, _, ttl_s = await pipe.execute()
        except (redis.exceptions.RedisError, OSError):
            return
        if int(failures) > self._per_minute:
            raise self._refusal(int(ttl_s))


class KeyAuthMiddleware(AbstractAuthenticationMiddleware):
    """Every route but the public ones needs a key. Cheap when it fails: the secret's form is checked and
    misses are remembered before the database is asked, and each address may fail only so often."""

    async def authenticate_request(self, connection: ASGIConnection) -> AuthenticationResult:  # type: ignore[type-arg]
        state = connection.app.state
        secret = presented_key(connection)
        if secret is None:
            raise Unauthorized("missing API key: send the header 'Authorization: Bearer <key>'")
        principal = state.key_store.known(secret)
        if principal is not None and principal is not False:
            return AuthenticationResult(user=principal, auth=principal.key_id)
        address = client_address(connection, state.settings.auth.trusted_proxy_header)
        if principal is False:
            await state.auth_failures.check(address)
            principal = await state.key_store.lookup(secret)
        if principal is None:
            await state.auth_failures.count(address)
            raise Unauthorized("invalid API key")
        return AuthenticationResult(user=principal, auth=principal.key_id)
