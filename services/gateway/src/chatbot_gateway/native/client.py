"""The gateway's client of the conversation service's internal API."""

from __future__ import annotations

import re
from typing import Any

import httpx
import msgspec

from ..auth import Principal
from ..errors import GatewayError, NotFound, Unavailable

_SAFE_PATH = re.compile(r"[A-Za-z0-9/_.~-]{1,512}")


class ServiceError(GatewayError):
    """The conversation service refused: its status and error body go to the client as they are."""

    def __init__(self, status: int, body: bytes) -> None:
        try:
            error = msgspec.json.decode(body).get("error", {})
        except (msgspec.DecodeError, AttributeError):
            error = {}
        super().__init__(error.get("message") or f"the conversation service answered {status}", code=error.get("code"))
        self.status_code = status
        self.error_type = error.get("type") or "invalid_request_error"


class ConversationClient:
    """Calls `/internal/v1/...` as a principal; a service that is down is a clear 503."""

    def __init__(self, base_url: str) -> None:
        self._http = httpx.AsyncClient(base_url=base_url.rstrip("/") + "/internal/v1", timeout=httpx.Timeout(30.0, connect=2.0))

    async def call(
        self, who: Principal | None, method: str, path: str, *, body: bytes | None = None, params: dict[str, Any] | None = None
    ) -> httpx.Response:
        headers = {"content-type": "application/json"}
        if who is not None:
            headers["x-chatbot-owner"] = who.owner
            if who.is_admin:
                headers["x-chatbot-admin"] = "1"
        if not _SAFE_PATH.fullmatch(path):
            # Ids are ours (hex, url-safe tokens): anything else names nothing that exists.
            raise NotFound(f"no such resource {path!r}")
        query = {k: v for k, v in (params or {}).items() if v is not None}
        try:
            response = await self._http.request(method, path, content=body, params=query, headers=headers)
        except httpx.HTTPError as exc:
            raise Unavailable(
                f"the conversation service is unreachable ({type(exc).__name__}); stored conversations are unavailable, "
                "OpenAI- and Anthropic-compatible chat still works",
                code="conversation_service_unavailable",
                headers={"Retry-After": "5"},
            ) from exc
        if response.status_code >= 400:
            raise ServiceError(response.status_code, response.content)
        return response

    async def close(self) -> None:
        await self._http.aclose()
