"""What the HTTP adapters share: opening a streamed call and classifying how it failed."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from typing import Any

import httpx
import msgspec

from .base import ProviderError, error_for_status


class _ErrorBody(msgspec.Struct):
    message: str = ""
    type: str | None = None
    status: str | None = None
    code: str | int | None = None


class _ErrorEnvelope(msgspec.Struct):
    error: _ErrorBody | str | None = None


_error_decoder = msgspec.json.Decoder(_ErrorEnvelope)


def error_message(raw: bytes) -> str:
    """The provider's explanation from an error body (`{"error": {"message"}}` or `{"error": "…"}`), or the body."""
    try:
        error = _error_decoder.decode(raw).error
    except msgspec.MsgspecError:
        return raw.decode(errors="replace")[:500] or "(empty body)"
    if isinstance(error, _ErrorBody):
        return error.message or str(error.status or error.type or error.code)
    return error or raw.decode(errors="replace")[:500]


@asynccontextmanager
async def streaming_post(
    http: httpx.AsyncClient, url: str, *, body: bytes, headers: Mapping[str, str], provider: str
) -> AsyncIterator[httpx.Response]:
    """POST and yield the open response; failures of the call, or of reading it, become `ProviderError`s."""
    try:
        async with http.stream("POST", url, content=body, headers=headers) as response:
            if response.status_code >= 400:
                raise error_for_status(response.status_code, error_message(await response.aread()), response.headers, provider)
            yield response
    except httpx.TimeoutException as exc:
        raise ProviderError("timeout", f"{provider}: {type(exc).__name__} calling {url}") from exc
    except httpx.TransportError as exc:
        raise ProviderError("network", f"{provider}: {type(exc).__name__} calling {url}: {exc}") from exc


def api_key(environ: Mapping[str, str], variable: str | None, provider: str) -> str | None:
    """The secret in `variable`; a named but unset variable is an authentication failure, said plainly."""
    if not variable:
        return None
    key = environ.get(variable)
    if not key:
        raise ProviderError("authentication", f"{provider}: the environment variable {variable} that holds the API key is not set")
    return key


DRAIN_WITHIN_S = 1.0


async def drain(rest: AsyncIterator[Any], within_s: float = DRAIN_WITHIN_S) -> None:
    """Read what follows a stream's end marker (`[DONE]`, `message_stop`, `done`): the body's last bytes.

    Closed before its body ends, a response takes its connection with it, and the next call
    connects again (a tenth of a worker's CPU at load went to new connections). A server that
    keeps sending or holds the body open past `within_s` is left to the close.
    """
    with contextlib.suppress(TimeoutError, httpx.HTTPError):
        async with asyncio.timeout(within_s):
            async for _ in rest:
                pass
