"""The benchmark's load client: HTTP/1.1 over asyncio protocols, with httptools parsing the responses.

The targets share this machine's two cores with the client, so what the client spends per token
is taken from them. aiohttp woke a task for every chunk of every stream (about 20 µs of CPU per
token at a thousand streams, as much as the upstream); here each chunk is counted in the
protocol's callback as it is parsed, and no task runs until the response ends. Connections
are kept alive and reused, as an HTTP client's pool does.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from urllib.parse import urlsplit

import httptools

TOKEN = b"tok "
TIMEOUT_S = 120.0


@dataclass
class Sample:
    ttft: float | None = None
    gaps: list[float] = field(default_factory=list)
    total: float = 0.0
    tokens: int = 0
    error: str | None = None


class _Connection(asyncio.Protocol):
    """One keep-alive connection; measures the response in flight as its body arrives."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self._parser = httptools.HttpResponseParser(self)
        self.sample = Sample()
        """The response in flight, measured as it arrives."""
        self.status = 0
        self.body_done = False
        """The body held `[DONE]`."""
        self._started = self._last = 0.0
        self._keep_alive = False
        self._ended: asyncio.Future[str | None] | None = None

    def send(self, request: bytes) -> asyncio.Future[str | None]:
        """Write `request`; the future settles with None when its response has ended, else with what went wrong."""
        assert self.transport is not None
        self.sample, self.status, self.body_done = Sample(), 0, False
        self._ended = asyncio.get_running_loop().create_future()
        self._started = self._last = time.perf_counter()
        self.transport.write(request)
        return self._ended

    def keep_alive(self) -> bool:
        return not self.closed and self._keep_alive

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's transports are not asyncio.Transport subclasses

    def data_received(self, data: bytes) -> None:
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self._end(f"bad response: {exc}")
            self.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self._end("connection closed")

    def close(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.close()

    # httptools' callbacks
    def on_headers_complete(self) -> None:
        self.status = self._parser.get_status_code()
        self._keep_alive = self._parser.should_keep_alive()  # known once the headers are (llhttp forgets it after the body)

    def on_body(self, body: bytes) -> None:
        if self.status != 200:
            return
        count = body.count(TOKEN)
        if count:
            now = time.perf_counter()
            sample = self.sample
            if sample.ttft is None:
                sample.ttft = now - self._started
            else:
                sample.gaps.append(now - self._last)
            if count > 1:
                sample.gaps.extend([0.0] * (count - 1))
            sample.tokens += count
            self._last = now
        if b"[DONE]" in body:
            self.body_done = True

    def on_message_complete(self) -> None:
        self.sample.total = time.perf_counter() - self._started
        self._end(None)

    def _end(self, outcome: str | None) -> None:
        if self._ended is not None and not self._ended.done():
            self._ended.set_result(outcome)


class Client:
    """Streamed chat completions against one base URL (`http://host:port/v1`), over a pool of kept-alive connections."""

    def __init__(self, base_url: str, headers: dict[str, str] | None = None) -> None:
        url = urlsplit(base_url)
        self._host = url.hostname or "127.0.0.1"
        self._port = url.port or 80
        self._path = url.path.rstrip("/") + "/chat/completions"
        self._headers = "".join(f"{name}: {value}\r\n" for name, value in (headers or {}).items()).encode()
        """Header lines every request carries besides its own (a gateway's routing headers)."""
        self._idle: list[_Connection] = []

    async def _connection(self) -> _Connection:
        while self._idle:
            connection = self._idle.pop()
            if not connection.closed:
                return connection
        _, connection = await asyncio.get_running_loop().create_connection(_Connection, self._host, self._port)
        return connection

    async def stream(self, key: str, model: str, max_tokens: int) -> Sample:
        """One streamed chat completion; token times from the raw body (no JSON decoding, so the client stays cheap)."""
        body = b'{"model": "%s", "stream": true, "max_tokens": %d, "messages": [{"role": "user", "content": "go"}]}' % (
            model.encode(),
            max_tokens,
        )
        request = (
            b"POST %s HTTP/1.1\r\nHost: %s:%d\r\nAuthorization: Bearer %s\r\n%sContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s"
        ) % (self._path.encode(), self._host.encode(), self._port, key.encode(), self._headers, len(body), body)
        try:
            connection = await self._connection()
        except OSError as exc:
            return Sample(error=type(exc).__name__)
        try:
            outcome = await asyncio.wait_for(connection.send(request), TIMEOUT_S)
        except TimeoutError:
            connection.close()
            return Sample(error="TimeoutError")
        sample = connection.sample
        if outcome is not None:
            sample.error = outcome
        elif connection.status != 200:
            sample.error = f"HTTP {connection.status}"
        elif not connection.body_done or sample.tokens != max_tokens:
            sample.error = f"incomplete: {sample.tokens}/{max_tokens} tokens"
        if outcome is None and connection.keep_alive():
            self._idle.append(connection)
        else:
            connection.close()
        return sample

    def close(self) -> None:
        for connection in self._idle:
            connection.close()
        self._idle.clear()
