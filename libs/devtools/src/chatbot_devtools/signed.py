"""Calls to an internal service as the gateway makes them (signed), for tests that call those services directly."""

from __future__ import annotations

from collections.abc import Generator

import httpx

from chatbot_contracts.signing import Signer

from .platform import INTERNAL_SECRET


class SignedAs(httpx.Auth):
    """httpx authentication that signs each request as the gateway would for `owner` (None: no caller, as for shares)."""

    def __init__(self, owner: str | None, admin: bool = False, secret: str = INTERNAL_SECRET) -> None:
        self._signer = Signer(secret)
        self._owner = owner
        self._admin = admin

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        path, _, query = request.url.raw_path.decode("ascii").partition("?")
        request.headers.update(self._signer.headers(request.method, path, query, request.content, self._owner, self._admin))
        yield request
