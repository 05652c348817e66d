"""The gateway's client of an internal service's API (the conversation service, the log collector)."""

from __future__ import annotations

import re
from typing import Any

import httpx
import msgspec

from chatbot_contracts.signing import Signer

from ..auth import Principal
from ..errors import GatewayError, NotFound, Unavailable

_SAFE_PATH = re.compile(r"[A-Za-z0-9/_.~-]{1,512}")


class ServiceError(GatewayError):
    """The service refused: its status and error body go to the client as they are."""

    def __init__(self, status: int, body: bytes, service: str) -> None:
        try:
            error = msgspec.json.decode(body).get("error", {})
        except (msgspec.DecodeError, AttributeError):
            error = {}
        super().__init__(error.get("message") or f"the {service} answered {status}", code=error.get("code"))
        self.status_code = status
        self.error_type = error.get("type") or "invalid_request_error"


class ServiceClient:
    """Calls `/internal/v1/...` of one service as a principal; a service that is down is a clear 503."""

    def __init__(self, base_url: str, service: str, unavailable: str, code: str, signer: Signer) -> None:
        self._http = httpx.AsyncClient(base_url=base_url.rstrip("/") + "/internal/v1", timeout=httpx.Timeout(30.0, connect=2.0))
        self._signer = signer
        self._service = service
        self._unavailable = unavailable
        """What stops working while the service is away (said in the 503)."""
        self._code = code

    def _request(
        self,
        who: Principal | None,
        method: str,
        path: str,
        body: bytes | None,
        params: dict[str, Any] | None,
        content_type: str = "application/json",
    ) -> httpx.Request:
        if not _SAFE_PATH.fullmatch(path):
            # Ids are ours (hex, url-safe tokens): anything else names nothing that exists.
            raise NotFound(f"no such resource {path!r}")
        query = {k: v for k, v in (params or {}).items() if v is not None}
        request = self._http.build_request(method, path, content=body, params=query, headers={"content-type": content_type})
        # The signature covers the path and query exactly as they go out, and the caller's identity.
        raw_path, _, raw_query = request.url.raw_path.decode("ascii").partition("?")
        request.headers.update(
            self._signer.headers(method, raw_path, raw_query, body or b"", who.owner if who else None, bool(who and who.is_admin))
        )
        return request

    def _down(self, exc: httpx.HTTPError) -> Unavailable:
        return Unavailable(
            f"the {self._service} is unreachable ({type(exc).__name__}); {self._unavailable}",
            code=self._code,
            headers={"Retry-After": "5"},
        )

    async def call(
        self,
        who: Principal | None,
        method: str,
        path: str,
        *,
        body: bytes | None = None,
        params: dict[str, Any] | None = None,
        content_type: str = "application/json",
    ) -> httpx.Response:
        try:
            response = await self._http.send(self._request(who, method, path, body, params, content_type))
        except httpx.HTTPError as exc:
            raise self._down(exc) from exc
        if response.status_code >= 400:
            raise ServiceError(response.status_code, response.content, self._service)
        return response

    async def open(self, who: Principal, path: str, params: dict[str, Any]) -> httpx.Response:
        """A GET whose body is still to be read, as it comes (the caller closes it); errors are raised like `call`'s."""
        try:
            response = await self._http.send(self._request(who, "GET", path, None, params), stream=True)
        except httpx.HTTPError as exc:
            raise self._down(exc) from exc
        if response.status_code >= 400:
            body = await response.aread()
            await response.aclose()
            raise ServiceError(response.status_code, body, self._service)
        return response

    async def close(self) -> None:
        await self._http.aclose()
