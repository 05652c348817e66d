"""What the HTTP adapters share: the client, opening a streamed call, reading its body, classifying how it failed.

Provider calls go through `wire.Client` (HTTP/1.1 parsed by httptools in the connection's
protocol): with httpx and httpx-sse the provider call was about half of a worker's CPU, with
aiohttp's client 18 µs per token, with this one 11. The body is read as lines (any of CR, LF,
CRLF ends one) or as server-sent events (the data of each).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from typing import Any

import msgspec

from .base import ProviderError, error_for_status
from .wire import Client, ConnectTimeout, HttpError, InvalidRequest, Response


def client_session(connect_timeout_s: float) -> Client:
    """The worker's client for every provider call: pooled connections without a bound, `connect_timeout_s` to
    get one, proxies from the environment. Reads have no timer of the client's: the worker times the
    first token and every later one itself (a read timer moved on every chunk received was about 4 %
    of a worker's CPU at a thousand streams), and `drain` bounds its own read.
    """
    return Client(connect_timeout_s)


MAX_LINE_BYTES = 1 << 20
"""A provider's line (or server-sent event field) longer than this ends the call with an error."""
MAX_EVENT_BYTES = 4 << 20
"""A server-sent event whose data adds up past this ends the call with an error."""
MAX_ERROR_BODY_BYTES = 64 << 10
"""How much of an error response's body is read for its explanation."""


def _too_long(what: str, limit: int) -> ProviderError:
    return ProviderError("upstream_error", f"the provider sent {what} longer than {limit} bytes")


class Body:
    """A streamed response's body, read with bounds on a line's and an event's size."""

    def __init__(self, response: Response) -> None:
        self.response = response

    async def lines(self) -> AsyncIterator[bytes]:
        """Each line as it arrives, without its ending (CR, LF or CRLF); a last line without one too."""
        read, pending = self.response.readany, b""
        while chunk := await read():
            lines, pending = _cut(pending + chunk)
            if len(pending) > MAX_LINE_BYTES:
                raise _too_long("a line", MAX_LINE_BYTES)
            for line in lines:
                if len(line) > MAX_LINE_BYTES:
                    raise _too_long("a line", MAX_LINE_BYTES)
                yield line
        if pending:
            yield pending.rstrip(b"\r\n")

    async def events(self) -> AsyncIterator[str]:
        """The data of each server-sent event (comments and the other fields, which no adapter needs, skipped).

        As the HTML standard says: `data` lines join with LF, one space after the colon is dropped,
        an empty line ends the event, and an event the body ends without ending is not one. Read
        straight from the body, not through `lines`: one generator less for every token.
        """
        read, pending, ended = self.response.readany, b"", False
        data: list[str] = []
        size = 0
        while not ended:
            if chunk := await read():
                lines, pending = _cut(pending + chunk)
                if len(pending) > MAX_LINE_BYTES:
                    raise _too_long("an event line", MAX_LINE_BYTES)
            else:  # the end: a last line without its ending is one too (it may end with a CR)
                lines, pending, ended = ([pending.rstrip(b"\r\n")] if pending else []), b"", True
            for line in lines:
                if not line:
                    if data:
                        yield "\n".join(data)
                        data, size = [], 0
                    continue
                field, _, value = line.partition(b":")
                if field == b"data":
                    size += len(value)
                    if size > MAX_EVENT_BYTES:
                        raise _too_long("an event", MAX_EVENT_BYTES)
                    data.append((value[1:] if value.startswith(b" ") else value).decode())


def _cut(buffer: bytes) -> tuple[list[bytes], bytes]:
    """The complete lines in `buffer`, without their endings, and the rest: a piece with no ending yet, or
    one ending in a CR whose LF may come next."""
    lines = buffer.splitlines(keepends=True)
    rest = lines.pop() if lines and not lines[-1].endswith(b"\n") else b""
    return [line.rstrip(b"\r\n") for line in lines], rest


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


async def read_at_most(response: Response, limit: int) -> bytes:
    """The body's first `limit` bytes (the rest is left unread: the connection is closed with the response)."""
    chunks: list[bytes] = []
    size = 0
    while size < limit and (chunk := await response.readany()):
        chunks.append(chunk)
        size += len(chunk)
    return b"".join(chunks)[:limit]


@asynccontextmanager
async def streaming_post(http: Client, url: str, *, body: bytes, headers: Mapping[str, str], provider: str) -> AsyncIterator[Body]:
    """POST and yield the open response's body; failures of the call, or of reading it, become `ProviderError`s."""
    try:
        async with http.post(url, body, headers) as response:
            if response.status >= 400:
                raise error_for_status(
                    response.status, error_message(await read_at_most(response, MAX_ERROR_BODY_BYTES)), response.headers, provider
                )
            yield Body(response)
    except ConnectTimeout as exc:
        raise ProviderError("timeout", f"{provider}: {exc} calling {url}") from exc
    except InvalidRequest as exc:
        raise ProviderError("bad_request", f"{provider}: {exc}") from exc
    except HttpError as exc:
        raise ProviderError("network", f"{provider}: {exc} calling {url}") from exc


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
    with contextlib.suppress(TimeoutError, HttpError):
        async with asyncio.timeout(within_s):
            async for _ in rest:
                pass
