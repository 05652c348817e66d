"""HTTP/1.1 for provider calls: pooled keep-alive connections, each response parsed by httptools as it arrives.

A streamed provider response arrives a few dozen bytes at a time, once for every token of every
generation, so a client's work per received chunk is a large share of a worker's CPU. aiohttp's
client (a C parser feeding a stream reader in Python) cost about 18 µs per token on a paced
stream, this one 11, the same server-sent event parsing included. It does what provider calls
need: a POST with a body over `http` or `https` (the system's CA store), proxies from the
environment (`HTTP_PROXY`, `HTTPS_PROXY`, `ALL_PROXY`, `NO_PROXY`: the absolute URL to the proxy for
`http`, a CONNECT tunnel for `https`), responses framed by length, by chunks or by the close, and
gzip or deflate content encodings.
"""

from __future__ import annotations

import asyncio
import base64
import socket
import ssl
import time
import urllib.request
import zlib
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import asynccontextmanager
from typing import Any
from urllib.parse import SplitResult, quote, unquote, urlsplit

import httptools

USER_AGENT = "chatbot-llm-inference"
IDLE_S = 15.0
"""A kept-alive connection unused this long is closed rather than reused (servers close theirs after seconds to minutes)."""
DNS_TTL_S = 60.0
HIGH_WATER = 1 << 20
"""Body bytes received and not yet read past which the socket is no longer read, until they are."""
MAX_INFLATED_BYTES = 64 << 20
"""A compressed response body inflating past this fails (a small body can otherwise unpack into gigabytes)."""

Origin = tuple[str, str, int]
"""Scheme, host and port."""
Proxy = tuple[str, int, str | None]
"""Host, port and the `Proxy-Authorization` its URL's credentials make (None without)."""


class HttpError(Exception):
    """The call failed beneath HTTP: no connection, a connection lost, a response that is not HTTP."""


class ConnectTimeout(HttpError):
    """No connection within the connect timeout."""


class InvalidRequest(HttpError):
    """The call cannot be made as asked: not an http(s) URL, a header with a line break, a proxy that is not http://."""


class Response:
    """One response: its status, its headers (names in lower case) and its body, read as it arrives."""

    def __init__(self, connection: _Connection) -> None:
        self.status = connection.status
        self.headers: Mapping[str, str] = connection.headers
        self.readany: Callable[[], Awaitable[bytes]] = connection.readany
        """The body's bytes received since the last read, waiting for some; `b""` once the body has ended (the
        connection's own method: no layer of its own on every chunk)."""

    async def read(self) -> bytes:
        """The rest of the body."""
        chunks: list[bytes] = []
        while chunk := await self.readany():
            chunks.append(chunk)
        return b"".join(chunks)


class _Connection(asyncio.Protocol):
    """One connection and the response in flight on it, parsed in `data_received`; the reader wakes once per chunk."""

    def __init__(self) -> None:
        self.transport: Any = None  # uvloop's transports are not asyncio.Transport subclasses
        self.closed = False
        self.idle_since = 0.0
        self.tunnel: asyncio.Future[int] | None = None
        """While a CONNECT is answered: settled with the proxy's status."""
        self._parser = httptools.HttpResponseParser(self)
        self._loop = asyncio.get_running_loop()
        self.begin()

    def begin(self) -> None:
        """Ready for the next response on this connection."""
        self.status = 0
        self.headers: dict[str, str] = {}
        self.keep_alive = False
        self.received = False
        """Any byte of the response has arrived."""
        self.ended = False
        self._by_close = False
        self._chunks: list[bytes] = []
        self._held = 0
        self._decoder: Any = None
        self._inflated = 0
        self._error: HttpError | None = None
        self._head: asyncio.Future[None] = self._loop.create_future()
        self._waiter: asyncio.Future[None] | None = None

    # asyncio's callbacks
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.received = True
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self._fail(HttpError(f"the response is not valid HTTP/1.1: {exc}"))
            self.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self._head.done() and self._by_close and not self.ended:
            self.on_message_complete()  # a body without a length or chunks ends with the connection
        self._fail(HttpError(f"the connection closed before the response ended{f': {exc}' if exc else ''}"))

    def close(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.close()

    # httptools' callbacks
    def on_header(self, name: bytes, value: bytes) -> None:
        key, text = name.decode("latin-1").lower(), value.decode("latin-1")
        self.headers[key] = f"{self.headers[key]}, {text}" if key in self.headers else text

    def on_headers_complete(self) -> None:
        self.status = self._parser.get_status_code()
        if self.tunnel is not None:  # a proxy's answer to CONNECT: what follows is the tunnel's
            self.tunnel.set_result(self.status)
            return
        self.keep_alive = self._parser.should_keep_alive()  # known now; llhttp forgets it after the body
        framed = "content-length" in self.headers or "chunked" in self.headers.get("transfer-encoding", "")
        self._by_close = not framed and self.status not in (204, 304) and self.status >= 200
        encoding = self.headers.get("content-encoding", "identity").strip().lower()
        if encoding in ("gzip", "x-gzip", "deflate"):
            self._decoder = zlib.decompressobj(zlib.MAX_WBITS | 32)  # a zlib or gzip header, whichever comes
        elif encoding != "identity":
            self._fail(HttpError(f"the response's content encoding {encoding!r} is not one this client reads"))
            self.close()
            return
        if self.status >= 200:
            self._head.set_result(None)

    def on_body(self, body: bytes) -> None:
        if self._decoder is not None:
            room = MAX_INFLATED_BYTES - self._inflated
            try:
                body = self._decoder.decompress(body, room + 1)  # never more than the bound in memory, however it packs
            except zlib.error as exc:
                self._fail(HttpError(f"the response's compressed body is corrupt: {exc}"))
                self.close()
                return
            self._inflated += len(body)
            if len(body) > room:
                self._fail(HttpError(f"the response's compressed body inflates past {MAX_INFLATED_BYTES} bytes"))
                self.close()
                return
        if body:
            self._chunks.append(body)
            self._held += len(body)
            if self._held > HIGH_WATER:
                self.transport.pause_reading()
            self._wake()

    def on_message_complete(self) -> None:
        if self.tunnel is not None:
            return
        if self.status < 200:  # an interim answer (100 Continue): the response follows
            self.headers = {}
            return
        if self._decoder is not None and (rest := self._decoder.flush()):
            self._chunks.append(rest)
        self.ended = True
        self._wake()

    # the caller's side
    async def head(self) -> None:
        """Wait for the status and headers."""
        await self._head

    async def readany(self) -> bytes:
        while not self._chunks:
            if self.ended:
                return b""
            if self._error is not None:
                raise self._error
            self._waiter = self._loop.create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None
        chunks, self._chunks = self._chunks, []
        if self._held > HIGH_WATER and not self.closed:
            self.transport.resume_reading()
        self._held = 0
        return chunks[0] if len(chunks) == 1 else b"".join(chunks)

    def _fail(self, error: HttpError) -> None:
        if self._error is None and not self.ended:
            self._error = error
        if not self._head.done():
            self._head.set_exception(error)
            self._head.exception()  # retrieved: nobody may be waiting for it
        if self.tunnel is not None and not self.tunnel.done():
            self.tunnel.set_exception(error)
            self.tunnel.exception()
        self._wake()

    def _wake(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)


class Client:
    """Provider calls' connections, kept alive and reused per origin (and proxy), opened within `connect_timeout_s`."""

    def __init__(self, connect_timeout_s: float, ssl_context: ssl.SSLContext | None = None) -> None:
        self._connect_timeout_s = connect_timeout_s
        self._ssl = ssl_context or ssl.create_default_context()
        self._idle: dict[tuple[Origin, Proxy | None], list[_Connection]] = {}
        self._addresses: dict[tuple[str, int], tuple[float, list[str]]] = {}
        self._proxies = urllib.request.getproxies()
        """Read once: proxies are a deployment's setting, not something that changes while it runs."""

    @asynccontextmanager
    async def post(self, url: str, body: bytes, headers: Mapping[str, str]) -> AsyncIterator[Response]:
        """POST `body` to `url` and yield the response once its headers are in; its connection is reused only when
        the body was read to its end. Raises `HttpError` when the call fails beneath HTTP or cannot be made."""
        target = urlsplit(url)
        if target.scheme not in ("http", "https") or not target.hostname:
            raise InvalidRequest(f"not an http or https URL: {url!r}")
        origin = (target.scheme, target.hostname, target.port or (443 if target.scheme == "https" else 80))
        proxy = self._proxy_for(origin)
        through = proxy if proxy is not None and origin[0] == "http" else None  # an http call names its URL to the proxy
        request = _request(target, origin, body, headers, through)
        for last_try in (False, True):
            connection = await self._connection(origin, proxy)
            reused = connection.idle_since > 0
            connection.begin()
            connection.transport.write(request)
            try:
                await connection.head()
            except HttpError:
                connection.close()
                if reused and not connection.received and not last_try:
                    continue  # the server closed the idle connection as the request went out: it was not read
                raise
            except BaseException:
                connection.close()
                raise
            break
        try:
            yield Response(connection)
        except BaseException:
            connection.close()
            raise
        if connection.ended and connection.keep_alive and not connection.closed:
            connection.idle_since = time.monotonic()
            self._idle.setdefault((origin, proxy), []).append(connection)
        else:
            connection.close()  # the body was left unread: the connection cannot carry another response

    async def __aenter__(self) -> Client:
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.close()

    async def close(self) -> None:
        """Close the idle connections (those of calls in flight close as their calls end)."""
        for connections in self._idle.values():
            for connection in connections:
                connection.close()
        self._idle.clear()

    def _proxy_for(self, origin: Origin) -> Proxy | None:
        proxy = self._proxies.get(origin[0]) or self._proxies.get("all")
        if not proxy or urllib.request.proxy_bypass(origin[1]):
            return None
        parts = urlsplit(proxy if "://" in proxy else f"http://{proxy}")
        if parts.scheme != "http" or not parts.hostname:
            raise InvalidRequest(f"only http:// proxies are supported, not {parts.scheme}://{parts.hostname}")
        authorization = None
        if parts.username is not None:
            credentials = f"{unquote(parts.username)}:{unquote(parts.password or '')}".encode()
            authorization = f"Basic {base64.b64encode(credentials).decode()}"
        return (parts.hostname, parts.port or 80, authorization)

    async def _connection(self, origin: Origin, proxy: Proxy | None) -> _Connection:
        idle = self._idle.get((origin, proxy))
        now = time.monotonic()
        while idle:
            connection = idle.pop()
            if not connection.closed and now - connection.idle_since < IDLE_S:
                return connection
            connection.close()
        try:
            async with asyncio.timeout(self._connect_timeout_s):
                return await self._connect(origin, proxy)
        except TimeoutError as exc:
            raise ConnectTimeout(f"no connection to {origin[1]}:{origin[2]} within {self._connect_timeout_s:g} s") from exc
        except (OSError, ssl.SSLError) as exc:
            raise HttpError(f"cannot connect to {origin[1]}:{origin[2]}: {exc}") from exc

    async def _connect(self, origin: Origin, proxy: Proxy | None) -> _Connection:
        loop = asyncio.get_running_loop()
        host, port = (proxy[0], proxy[1]) if proxy else (origin[1], origin[2])
        tls = self._ssl if proxy is None and origin[0] == "https" else None
        connection = await self._open(host, port, tls)
        if proxy is None or origin[0] == "http":
            return connection
        # https through a proxy: a tunnel to the origin, then TLS with the origin inside it.
        authority = f"{origin[1]}:{origin[2]}"
        connect = [f"CONNECT {authority} HTTP/1.1", f"Host: {authority}"]
        if proxy[2] is not None:
            connect.append(f"Proxy-Authorization: {proxy[2]}")
        connection.tunnel = loop.create_future()
        try:
            connection.transport.write("\r\n".join([*connect, "", ""]).encode("latin-1"))
            if (status := await connection.tunnel) != 200:
                raise HttpError(f"the proxy {host}:{port} refused a tunnel to {authority} ({status})")
            tunnelled = _Connection()
            transport = await loop.start_tls(connection.transport, tunnelled, self._ssl, server_hostname=origin[1])
            if transport is None:
                raise HttpError(f"no TLS with {authority} through the proxy {host}:{port}")
        except BaseException:
            connection.close()
            raise
        tunnelled.connection_made(transport)
        return tunnelled

    async def _open(self, host: str, port: int, tls: ssl.SSLContext | None) -> _Connection:
        """A connection to the first of `host`'s addresses that takes one. Addresses are kept for `DNS_TTL_S`: a
        thousand new connections to one provider resolve its name once."""
        now = time.monotonic()
        known = self._addresses.get((host, port))
        if known is None or known[0] <= now:
            infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
            known = (now + DNS_TTL_S, list(dict.fromkeys(str(info[4][0]) for info in infos)))
            self._addresses[(host, port)] = known
        for i, address in enumerate(known[1]):
            try:
                _, connection = await asyncio.get_running_loop().create_connection(
                    _Connection, address, port, ssl=tls, server_hostname=host if tls else None
                )
                return connection
            except OSError:
                if i == len(known[1]) - 1:
                    raise
        raise OSError(f"{host} has no address")


def _request(target: SplitResult, origin: Origin, body: bytes, headers: Mapping[str, str], proxy: Proxy | None) -> bytes:
    """The request's bytes (to `proxy`: with the whole URL); a header that would break the framing (a line break in it) is refused."""
    path = quote(target.path or "/", safe="/:@!$&'()*+,;=-._~%") + (f"?{target.query}" if target.query else "")
    default_port = 443 if origin[0] == "https" else 80
    authority = origin[1] if origin[2] == default_port else f"{origin[1]}:{origin[2]}"
    lines = [f"POST {f'{origin[0]}://{authority}{path}' if proxy else path} HTTP/1.1", f"Host: {authority}"]
    if proxy is not None and proxy[2] is not None:
        lines.append(f"Proxy-Authorization: {proxy[2]}")
    for name, value in headers.items():
        if not name or any(c in name + value for c in "\r\n\0"):
            raise InvalidRequest(f"the header {name!r} is empty or holds a line break")
        lines.append(f"{name}: {value}")
    if not any(name.lower() == "user-agent" for name in headers):
        lines.append(f"User-Agent: {USER_AGENT}")
    lines += [f"Content-Length: {len(body)}", "", ""]
    return "\r\n".join(lines).encode("latin-1") + body
