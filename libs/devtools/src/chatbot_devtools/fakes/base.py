"""What every fake provider shares: ASGI plumbing, scripted replies and faults, request records.

Each fake speaks one vendor's streaming format byte for byte; the vendor's official SDK consuming
it (tests in `libs/devtools/tests`) is what makes it trustworthy.
"""

from __future__ import annotations

import asyncio
import hashlib
import math
import re
import struct
import time
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any

import msgspec

Send = Callable[[dict[str, Any]], Awaitable[None]]
Receive = Callable[[], Awaitable[dict[str, Any]]]
_TOKEN = re.compile(r"\S+\s*|\s+")


def fake_vector(text: str, dimensions: int = 8) -> list[float]:
    """A unit vector made from `text` alone (the same text, the same vector), as a fake's embedding of it."""
    seed = hashlib.sha256(text.encode()).digest()
    values = [((seed[i % len(seed)] ^ (i * 37 % 251)) - 127.5) / 127.5 for i in range(dimensions)]
    norm = math.sqrt(sum(v * v for v in values)) or 1.0
    return [float(struct.unpack("<f", struct.pack("<f", v / norm))[0]) for v in values]


def tokenize(text: str) -> list[str]:
    """The reply as the pieces it is streamed in (a word and its trailing space each); joined, it is `text`."""
    return _TOKEN.findall(text)


class Fault(msgspec.Struct, kw_only=True):
    """What goes wrong with one request."""

    status: int | None = None
    """Answer with this HTTP status and the vendor's error body instead of a reply."""
    retry_after: float | None = None
    message: str = "fault injected by the fake upstream"
    drop_after: int | None = None
    """Close the connection after this many content chunks, without the stream's end."""
    error_after: int | None = None
    """Send the vendor's in-stream error after this many content chunks (HTTP status stays 200)."""
    malformed_after: int | None = None
    """Send a chunk that is not JSON after this many content chunks."""
    filtered_after: int | None = None
    """End with the vendor's content-filter (safety) finish after this many content chunks."""


class Stream:
    """One streamed response: paced chunks, noticing when the client goes away."""

    def __init__(self, fake: FakeUpstream, send: Send, receive: Receive) -> None:
        self.fake = fake
        self._send = send
        self._receive = receive
        self.disconnected = asyncio.Event()
        self.finished = False
        self._watcher: asyncio.Task[None] | None = None

    async def start(self, content_type: bytes) -> None:
        await self._send(
            {"type": "http.response.start", "status": 200, "headers": [(b"content-type", content_type), (b"cache-control", b"no-cache")]}
        )
        self._watcher = asyncio.create_task(self._watch())
        self.fake.active += 1
        self.fake.most_active = max(self.fake.most_active, self.fake.active)

    async def _watch(self) -> None:
        while (await self._receive())["type"] != "http.disconnect":
            pass
        if not self.finished:
            self.fake.disconnects.append(time.monotonic())
        self.disconnected.set()

    async def send(self, body: bytes, *, pace: bool = False, last: bool = False) -> bool:
        """Send `body`; False when the client has gone (the moment it went is in `fake.disconnects`)."""
        if pace and self.fake.token_delay_s:
            await asyncio.sleep(self.fake.token_delay_s)
        if self.disconnected.is_set():
            return False
        self.finished = last
        await self._send({"type": "http.response.body", "body": body, "more_body": not last})
        return True

    async def close(self) -> None:
        self.finished = True
        if self._watcher is not None:
            self._watcher.cancel()
            self.fake.active -= 1


class FakeUpstream:
    """An ASGI app of a fake provider. Subclasses route requests and write the vendor's format."""

    def __init__(self, reply: str | None = None, token_delay_s: float = 0.0, model: str = "fake-model") -> None:
        self.reply = reply
        self.token_delay_s = token_delay_s
        self.model = model
        self.base_url = ""
        """Where it is served (set by whoever serves it), in the form the vendor's SDK takes."""
        self.faults: deque[Fault] = deque()
        self.requests: list[dict[str, Any]] = []
        self.headers: list[dict[str, str]] = []
        self.disconnects: list[float] = []
        """Monotonic times at which a client closed a stream before its end."""
        self.active = 0
        self.most_active = 0
        """The most streams it was sending at once."""
        self.encoder = msgspec.json.Encoder()
        self.tool_call: tuple[str, str] | None = None
        """`(name, arguments as JSON text)`: when set and the request offers tools (and does not rule them out), the
        reply calls that tool instead of talking; a request that ends with a tool's result is answered in text."""

    @staticmethod
    def text_of(content: Any) -> str:
        """The text of a message content: a string, or the text parts of a list of blocks."""
        if isinstance(content, str):
            return content
        if isinstance(content, list):
            return "".join(part.get("text", "") for part in content if isinstance(part, dict))
        return ""

    def count(self, *texts: str) -> int:
        """Tokens as this fake counts them: the pieces `tokenize` makes."""
        return sum(len(tokenize(text)) for text in texts)

    def reply_to(self, question: str) -> str:
        return self.reply if self.reply is not None else f"You said: {question}"

    def next_fault(self) -> Fault:
        return self.faults.popleft() if self.faults else Fault()

    async def __call__(self, scope: dict[str, Any], receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            while (await receive())["type"] != "lifespan.shutdown":
                pass
            await send({"type": "lifespan.shutdown.complete"})
            return
        raw = b""
        while True:
            message = await receive()
            raw += message.get("body", b"")
            if not message.get("more_body"):
                break
        body = msgspec.json.decode(raw) if raw else {}
        headers = {k.decode().lower(): v.decode() for k, v in scope["headers"]}
        query = scope.get("query_string", b"").decode()
        await self.handle(scope["method"], scope["path"], query, headers, body, send, receive)

    async def handle(
        self, method: str, path: str, query: str, headers: dict[str, str], body: dict[str, Any], send: Send, receive: Receive
    ) -> None:
        raise NotImplementedError

    def record(self, headers: dict[str, str], body: dict[str, Any]) -> None:
        self.requests.append(body)
        self.headers.append(headers)

    async def json(self, send: Send, status: int, payload: Any, headers: list[tuple[bytes, bytes]] | None = None) -> None:
        await send({"type": "http.response.start", "status": status, "headers": [(b"content-type", b"application/json"), *(headers or [])]})
        await send({"type": "http.response.body", "body": self.encoder.encode(payload)})

    @staticmethod
    def retry_headers(fault: Fault) -> list[tuple[bytes, bytes]]:
        return [(b"retry-after", f"{fault.retry_after:g}".encode())] if fault.retry_after is not None else []


def serve_main(factory: Callable[..., FakeUpstream], default_port: int) -> None:
    """A command line that serves one fake for demos and benchmarks."""
    import argparse

    import uvicorn

    parser = argparse.ArgumentParser(description=f"Serve {factory.__name__} on 127.0.0.1")
    parser.add_argument("--port", type=int, default=default_port)
    parser.add_argument("--reply", default=None, help="the reply to every request (default: echo the question)")
    parser.add_argument("--token-delay", type=float, default=0.0, help="seconds between tokens (0: as fast as possible)")
    args = parser.parse_args()
    fake = factory(reply=args.reply, token_delay_s=args.token_delay)
    uvicorn.run(fake, host="127.0.0.1", port=args.port, log_config=None, access_log=False, loop="uvloop", http="httptools", lifespan="off")
