"""What the HTTP adapters share: the client, opening a streamed call, reading its body, classifying how it failed.

Provider calls go through one aiohttp `ClientSession` per worker. The body is read as lines
(any of CR, LF, CRLF ends one) or as server-sent events (the data of each), straight from the
response's stream with bounds on a line's and an event's size.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import os
import ssl
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from typing import Any, TypeVar
from urllib.parse import unquote, urlsplit, urlunsplit
from urllib.request import getproxies, proxy_bypass

import aiohttp
import msgspec

from .base import ProviderError, error_for_status

T = TypeVar("T")

USER_AGENT = "chatbot-llm-inference"
IDLE_S = 15.0
"""A kept-alive connection unused this long is closed rather than reused (servers close theirs after seconds to minutes)."""
DNS_TTL_S = 60.0


def client_session(connect_timeout_s: float, per_origin: int = 128, ssl_context: ssl.SSLContext | None = None) -> aiohttp.ClientSession:
    """The worker's client for every provider call.

    Kept-alive connections, at most `per_origin` to one scheme, host and port (a call past it
    waits for one to be free, within the connect timeout); `connect_timeout_s` to get a
    connection, TLS handshake and proxy tunnel included; proxies from the environment
    (`HTTP_PROXY`, `HTTPS_PROXY`, `ALL_PROXY`, `NO_PROXY`, read by `proxy_for` on each call: `http://` and
    `https://` proxies, which aiohttp's own reading of the environment would ignore); certificates
    checked against the system's store (`SSL_CERT_FILE` names another) or `ssl_context`.
    Reads have no timer of the client's: the worker times the first token and every later one
    itself, and `drain` bounds its own read. No cookies are kept: the session carries every
    tenant's calls, and a cookie a provider set in answer to one must not go with the next.
    """
    connector = aiohttp.TCPConnector(
        limit=0,
        limit_per_host=per_origin,
        keepalive_timeout=IDLE_S,
        ttl_dns_cache=int(DNS_TTL_S),
        ssl=ssl_context if ssl_context is not None else True,
    )
    return aiohttp.ClientSession(
        connector=connector,
        timeout=aiohttp.ClientTimeout(total=None, connect=connect_timeout_s),
        trust_env=False,
        headers={"User-Agent": USER_AGENT},
        cookie_jar=aiohttp.DummyCookieJar(),
    )


MAX_LINE_BYTES = 1 << 20
"""A provider's line (or server-sent event field) longer than this ends the call with an error."""
MAX_EVENT_BYTES = 4 << 20
"""A server-sent event whose data adds up past this ends the call with an error."""
MAX_ERROR_BODY_BYTES = 64 << 10
"""How much of an error response's body is read for its explanation."""
MAX_WHOLE_BYTES = 256 << 20
"""The longest answer read whole (embeddings of a large batch)."""


def _too_long(what: str, limit: int) -> ProviderError:
    return ProviderError("upstream_error", f"the provider sent {what} longer than {limit} bytes")


class Body:
    """A streamed response's body, read with bounds on a line's and an event's size."""

    def __init__(self, response: aiohttp.ClientResponse) -> None:
        self.response = response

    async def whole(self, limit: int = MAX_WHOLE_BYTES) -> bytes:
        """The whole body (of an answer that is not streamed), refused past `limit` bytes."""
        body = await read_at_most(self.response, limit + 1)
        if len(body) > limit:
            raise _too_long("a response", limit)
        return body

    async def lines(self) -> AsyncIterator[bytes]:
        """Each line as it arrives, without its ending (CR, LF or CRLF); a last line without one too."""
        read, pending = self.response.content.readany, b""
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
        an empty line ends the event, an event the body ends without ending is not one, and bytes that
        are not UTF-8 read as U+FFFD (a provider that cut a character in two loses it, not the answer). Read
        straight from the body, not through `lines`: one generator less for every token.
        """
        read, pending, ended = self.response.content.readany, b"", False
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
                    data.append((value[1:] if value.startswith(b" ") else value).decode(errors="replace"))


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
    except (msgspec.MsgspecError, UnicodeDecodeError):  # msgspec's own error for a string that is not UTF-8
        return raw.decode(errors="replace")[:500] or "(empty body)"
    if isinstance(error, _ErrorBody):
        return error.message or str(error.status or error.type or error.code)
    return error or raw.decode(errors="replace")[:500]


async def read_at_most(response: aiohttp.ClientResponse, limit: int) -> bytes:
    """The body's first `limit` bytes (the rest is left unread: the connection is closed with the response)."""
    chunks: list[bytes] = []
    size = 0
    while size < limit and (chunk := await response.content.readany()):
        chunks.append(chunk)
        size += len(chunk)
    return b"".join(chunks)[:limit]


PROXY_VARIABLES = (
    *(name for scheme in ("http", "https", "all", "no") for name in (f"{scheme}_proxy", f"{scheme.upper()}_PROXY")),
    "REQUEST_METHOD",
)
"""The environment variables that choose a call's proxy, in the spellings curl and requests read (`REQUEST_METHOD`:
in a CGI process `HTTP_PROXY` is a request's header, and is ignored)."""


def proxy_for(url: str) -> tuple[str | None, dict[str, str] | None]:
    """The proxy the environment names for `url` (none when `NO_PROXY` covers its host), and the `Proxy-Authorization`
    header the credentials in its URL make.

    Worked out once per host and setting: urllib reads the whole environment to find the proxies, which cost a
    worker about 3% of its CPU when it did so for every call."""
    target = urlsplit(url)
    return _proxy_for(target.scheme, target.hostname, tuple(os.environ.get(name) for name in PROXY_VARIABLES))


@functools.lru_cache(maxsize=256)
def _proxy_for(scheme: str, hostname: str | None, environment: tuple[str | None, ...]) -> tuple[str | None, dict[str, str] | None]:
    """`proxy_for` a URL of `scheme` on `hostname`, the proxy variables being `environment`."""
    proxies = getproxies()
    proxy = proxies.get(scheme) or proxies.get("all")
    if not proxy or (hostname and proxy_bypass(hostname)):
        return None, None
    parts = urlsplit(proxy if "://" in proxy else f"http://{proxy}")
    if parts.scheme not in ("http", "https"):
        raise ValueError(f"the proxy {parts.scheme}://{parts.hostname} is not supported: only http:// and https:// proxies are")
    address = urlunsplit((parts.scheme, f"{parts.hostname}" + (f":{parts.port}" if parts.port else ""), parts.path, "", ""))
    if not parts.username:
        return address, None
    return address, {"Proxy-Authorization": aiohttp.encode_basic_auth(unquote(parts.username), unquote(parts.password or ""))}


@asynccontextmanager
async def streaming_post(
    http: aiohttp.ClientSession, url: str, *, body: bytes, headers: Mapping[str, str], provider: str
) -> AsyncIterator[Body]:
    """POST and yield the open response's body; failures of the call, or of reading it, become `ProviderError`s."""
    answered = False
    try:
        proxy, proxy_headers = proxy_for(url)
        async with http.post(url, data=body, headers=headers, allow_redirects=False, proxy=proxy, proxy_headers=proxy_headers) as response:
            if response.status >= 400:
                raise error_for_status(
                    response.status, error_message(await read_at_most(response, MAX_ERROR_BODY_BYTES)), response.headers, provider
                )
            answered = True
            yield Body(response)
    except aiohttp.ConnectionTimeoutError as exc:
        raise ProviderError("timeout", f"{provider}: no connection within the connect timeout calling {url}") from exc
    except (aiohttp.InvalidURL, aiohttp.NonHttpUrlClientError) as exc:
        raise ProviderError("bad_request", f"{provider}: the call cannot be made: {url} is not an http or https URL") from exc
    except aiohttp.ClientError as exc:  # before ValueError: a certificate that fails its check is both
        raise ProviderError("network", f"{provider}: {_described(exc)} calling {url}") from exc
    except ValueError as exc:
        if answered:  # what the adapter could not make of the answer: the provider's, not the caller's, to get right
            raise ProviderError("upstream_error", f"{provider}: malformed answer ({exc})", upstream=True) from exc
        # A header with a line break, refused before anything is sent.
        raise ProviderError("bad_request", f"{provider}: the call cannot be made: {exc}") from exc


async def post_for(
    http: aiohttp.ClientSession, url: str, *, body: bytes, headers: Mapping[str, str], provider: str, decoder: msgspec.json.Decoder[T]
) -> T:
    """POST and decode the whole answer (one not streamed) with `decoder`; an answer it cannot read is the provider's error."""
    async with streaming_post(http, url, body=body, headers=headers, provider=provider) as response:
        raw = await response.whole()
    try:
        return decoder.decode(raw)
    except (msgspec.MsgspecError, UnicodeDecodeError) as exc:
        raise ProviderError("upstream_error", f"{provider}: malformed answer ({exc}): {raw[:200]!r}", upstream=True) from exc


def _described(error: aiohttp.ClientError) -> str:
    """What went wrong, in words: aiohttp's own for most; the kind for those whose message is empty."""
    return str(error) or type(error).__name__


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
    with contextlib.suppress(TimeoutError, aiohttp.ClientError):
        async with asyncio.timeout(within_s):
            async for _ in rest:
                pass
