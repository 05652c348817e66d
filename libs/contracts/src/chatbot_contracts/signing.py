"""Calls from the gateway to the internal services, signed: the only identity an internal API believes.

The gateway signs each call (HMAC-SHA256, a secret both sides read from `CHATBOT_INTERNAL_SECRET`)
over its method, path, query, body digest, the caller's owner and admin flag, a time and a nonce.
A service refuses (401) a call that is unsigned, wrongly signed, more than `MAX_SKEW_S` away from
its clock, or seen before (its nonce is remembered, in Redis across replicas, for twice the skew).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Iterable, MutableMapping
from typing import Any

import msgspec
import redis.asyncio as aioredis
import redis.exceptions
import structlog

log = structlog.get_logger()

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

OWNER = "x-chatbot-owner"
ADMIN = "x-chatbot-admin"
TIME = "x-chatbot-time"
NONCE = "x-chatbot-nonce"
SIGNATURE = "x-chatbot-signature"
MAX_SKEW_S = 30.0
SIGNED_HEADERS = frozenset({OWNER, ADMIN, TIME, NONCE, SIGNATURE})
PROBES = ("/healthz", "/readyz")
"""The only paths an internal service answers unsigned (the kubelet's probes)."""
MIN_SECRET_CHARS = 32


class SigningSettings(msgspec.Struct, kw_only=True, frozen=True):
    """The secret the gateway and the internal services share."""

    internal_secret: str = ""
    """`CHATBOT_INTERNAL_SECRET`: signs the gateway's calls to the internal services (required, 32+ characters)."""


def check_secret(secret: str) -> str:
    """The secret, or a clear refusal to start without a strong one."""
    if len(secret) < MIN_SECRET_CHARS:
        raise ValueError(
            f"CHATBOT_INTERNAL_SECRET must be set to at least {MIN_SECRET_CHARS} characters "
            "(the gateway signs its calls to the internal services with it); e.g. `python -c 'import secrets; print(secrets.token_urlsafe(32))'`"
        )
    return secret


def _canonical(method: str, path: str, query: str, body: bytes, owner: str, admin: bool, moment: str, nonce: str) -> bytes:
    digest = hashlib.sha256(body).hexdigest()
    return "\n".join((method.upper(), path, query, digest, owner, "1" if admin else "", moment, nonce)).encode()


class Signer:
    """The gateway's half: the headers that make one call believable."""

    def __init__(self, secret: str) -> None:
        self._key = check_secret(secret).encode()

    def headers(self, method: str, path: str, query: str, body: bytes, owner: str | None, admin: bool) -> dict[str, str]:
        moment, nonce = f"{time.time():.3f}", secrets.token_hex(16)
        mac = hmac.new(self._key, _canonical(method, path, query, body, owner or "", admin, moment, nonce), hashlib.sha256)
        headers = {TIME: moment, NONCE: nonce, SIGNATURE: mac.hexdigest()}
        if owner:
            headers[OWNER] = owner
        if admin:
            headers[ADMIN] = "1"
        return headers


class Refused(Exception):
    """Why a call is not believed (said in the 401)."""


class SeenNonces:
    """Nonces of calls already taken, for `2 * MAX_SKEW_S`: in Redis (every replica sees them), and while
    Redis is away in this process (a bounded LRU), so an outage refuses no call and replays to this replica still fail."""

    def __init__(self, redis: aioredis.Redis | None, prefix: str, local_bound: int = 100_000) -> None:
        self._redis = redis
        self._prefix = prefix
        self._local: OrderedDict[str, float] = OrderedDict()
        self._bound = local_bound

    async def first_time(self, nonce: str) -> bool:
        now = time.monotonic()
        while self._local and next(iter(self._local.values())) < now:
            self._local.popitem(last=False)
        if nonce in self._local:
            return False
        self._local[nonce] = now + 2 * MAX_SKEW_S
        if len(self._local) > self._bound:
            self._local.popitem(last=False)
        if self._redis is None:
            return True
        try:
            return bool(await self._redis.set(f"{self._prefix}{nonce}", b"1", nx=True, ex=int(2 * MAX_SKEW_S)))
        except (redis.exceptions.RedisError, OSError) as exc:
            log.warning("signing.nonce_store_unavailable", error=type(exc).__name__)
            return True


class Verifier:
    """A service's half: believes a call only with a fresh, unseen, correct signature."""

    def __init__(self, secret: str, seen: SeenNonces) -> None:
        self._key = check_secret(secret).encode()
        self._seen = seen

    async def check(self, method: str, path: str, query: str, body: bytes, headers: dict[str, str]) -> None:
        signature, moment, nonce = headers.get(SIGNATURE), headers.get(TIME), headers.get(NONCE)
        if not signature or not moment or not nonce:
            raise Refused("the call is not signed: this API answers only the gateway")
        try:
            skew = abs(time.time() - float(moment))
        except ValueError:
            raise Refused(f"{TIME} is not a time") from None
        if not skew <= MAX_SKEW_S:
            raise Refused(f"the call was signed {skew:.0f}s away from this service's clock (at most {MAX_SKEW_S:g}s)")
        owner, admin = headers.get(OWNER, ""), headers.get(ADMIN) == "1"
        expected = hmac.new(self._key, _canonical(method, path, query, body, owner, admin, moment, nonce), hashlib.sha256).hexdigest()
        if not hmac.compare_digest(expected, signature):
            raise Refused("the call's signature is wrong")
        if not await self._seen.first_time(nonce):
            raise Refused("the call was replayed")


def signed_only(verifier: Verifier, open_paths: Iterable[str], max_body_bytes: int) -> Callable[[ASGIApp], ASGIApp]:
    """ASGI middleware: every HTTP call but `open_paths` (probes) must carry the gateway's signature, else 401.

    The body is read here (up to `max_body_bytes`, else 413) to check its digest, then handed to the app as one message.
    """
    unguarded = frozenset(open_paths)

    def middleware(app: ASGIApp) -> ASGIApp:
        async def guarded(scope: Scope, receive: Receive, send: Send) -> None:
            if scope["type"] != "http" or scope["path"] in unguarded:
                await app(scope, receive, send)
                return
            chunks: list[bytes] = []
            size = 0
            while True:
                message = await receive()
                if message["type"] == "http.disconnect":
                    return
                chunk = message.get("body", b"")
                size += len(chunk)
                if size > max_body_bytes:
                    await _refuse(send, 413, f"the body is larger than {max_body_bytes} bytes", "request_too_large")
                    return
                chunks.append(chunk)
                if not message.get("more_body", False):
                    break
            body = b"".join(chunks)
            # Servers differ on whether `raw_path` carries the query (uvicorn: no; some test transports: yes).
            raw_path = (scope.get("raw_path") or scope["path"].encode()).partition(b"?")[0]
            headers = {name.decode("latin-1"): value.decode("latin-1") for name, value in scope["headers"]}
            try:
                signed = [name for name, _ in scope["headers"] if name.decode("latin-1").lower() in SIGNED_HEADERS]
                if len(signed) != len(set(signed)):
                    # The check reads one value and the app might read another: a signed header twice is never believed.
                    raise Refused("a signed header is sent twice")
                await verifier.check(scope["method"], raw_path.decode("latin-1"), scope["query_string"].decode("latin-1"), body, headers)
            except Refused as refused:
                log.warning("signing.refused", path=scope["path"], reason=str(refused))
                await _refuse(send, 401, str(refused), "unauthenticated")
                return
            replayed = False

            async def once() -> Message:
                nonlocal replayed
                if replayed:
                    return await receive()
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}

            await app(scope, once, send)

        return guarded

    return middleware


async def _refuse(send: Send, status: int, message: str, code: str) -> None:
    body = msgspec.json.encode({"error": {"message": message, "type": "invalid_request_error", "code": code}})
    await send({"type": "http.response.start", "status": status, "headers": [(b"content-type", b"application/json")]})
    await send({"type": "http.response.body", "body": body, "more_body": False})
