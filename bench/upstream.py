"""A fake OpenAI-compatible upstream for the gateway benchmark: every target is pointed at it.

Two modes: instant (`--tokens-per-s 0`: chunks as fast as it can write them) and paced (N tokens
per second per stream). Each request's answer has `max_tokens` tokens (default `--tokens`), one
word per chunk, each chunk its own write, then a usage chunk when asked
(`stream_options.include_usage`) and `[DONE]`.

It stands in for a provider on other machines, yet shares this machine's cores with the targets,
so it costs as little as it can: chunks are encoded and framed once, up front, and it is HTTP/1.1
over an asyncio protocol with httptools parsing the requests; a paced stream is a timer callback
per chunk, not a task woken per chunk (uvicorn with an ASGI app cost about twice as much per
token). `tests/bench` checks it with the official OpenAI SDK.

    python bench/upstream.py --port 9000 [--tokens-per-s 20]
"""

from __future__ import annotations

import argparse
import asyncio
import signal
from typing import Any

import httptools
import msgspec
import uvloop

_encoder = msgspec.json.Encoder()


def _chunk(content: str | None, finish: str | None = None, usage: dict[str, int] | None = None) -> bytes:
    body: dict[str, Any] = {
        "id": "chatcmpl-bench", "object": "chat.completion.chunk", "created": 0, "model": "bench-model",
        "choices": [] if usage else [{"index": 0, "delta": {"content": content} if content else {}, "finish_reason": finish}],
    }  # fmt: skip
    if usage:
        body["usage"] = usage
    return b"data: " + _encoder.encode(body) + b"\n\n"


def _framed(data: bytes) -> bytes:
    """`data` as one chunk of a chunked body."""
    return b"%x\r\n%s\r\n" % (len(data), data)


ROLE = _framed(
    b"data: " + _encoder.encode(
        {"id": "chatcmpl-bench", "object": "chat.completion.chunk", "created": 0, "model": "bench-model",
         "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}]}
    ) + b"\n\n"
)  # fmt: skip
WORD = _framed(_chunk("tok "))
STOP = _chunk(None, "stop")
DONE = b"data: [DONE]\n\n"
LAST = b"0\r\n\r\n"
SSE_HEAD = b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ncache-control: no-cache\r\ntransfer-encoding: chunked\r\n\r\n"


def _whole(status: bytes, body: bytes, content_type: bytes = b"application/json") -> bytes:
    return b"HTTP/1.1 %s\r\ncontent-type: %s\r\ncontent-length: %d\r\n\r\n%s" % (status, content_type, len(body), body)


class _Exchange(asyncio.Protocol):
    """One client connection: requests one after the other (kept alive), each answered in full before the next."""

    def __init__(self, tokens: int, delay: float) -> None:
        self._tokens = tokens
        self._delay = delay
        self._parser = httptools.HttpRequestParser(self)
        self._transport: asyncio.Transport | None = None
        self._url = b""
        self._body: list[bytes] = []
        self._left = 0
        self._tail = b""
        self._timer: asyncio.TimerHandle | None = None
        self._keep_alive = True

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport  # type: ignore[assignment]  # uvloop's transports are not asyncio.Transport subclasses

    def connection_lost(self, exc: Exception | None) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._transport = None

    def data_received(self, data: bytes) -> None:
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserError:
            self._write(_whole(b"400 Bad Request", b'{"error": {"message": "malformed HTTP request"}}'))
            self._close()

    # httptools' callbacks
    def on_headers_complete(self) -> None:
        self._keep_alive = self._parser.should_keep_alive()  # known once the headers are (llhttp forgets it after the body)

    def on_url(self, url: bytes) -> None:
        self._url += url

    def on_body(self, body: bytes) -> None:
        self._body.append(body)

    def on_message_complete(self) -> None:
        url, body, self._url, self._body = self._url, b"".join(self._body), b"", []
        if url.split(b"?")[0].endswith(b"/models"):
            listing = {"object": "list", "data": [{"id": "bench-model", "object": "model", "created": 0, "owned_by": "bench"}]}
            self._write(_whole(b"200 OK", _encoder.encode(listing)))
            self._done()
            return
        try:
            request = msgspec.json.decode(body or b"{}")
        except msgspec.DecodeError:
            self._write(_whole(b"400 Bad Request", b'{"error": {"message": "the body is not JSON"}}'))
            self._done()
            return
        count = int(request.get("max_tokens") or request.get("max_completion_tokens") or self._tokens)
        usage = {"prompt_tokens": 10, "completion_tokens": count, "total_tokens": 10 + count}
        if not request.get("stream"):
            completion = {
                "id": "chatcmpl-bench", "object": "chat.completion", "created": 0, "model": "bench-model", "usage": usage,
                "choices": [{"index": 0, "message": {"role": "assistant", "content": "tok " * count}, "finish_reason": "stop"}],
            }  # fmt: skip
            self._write(_whole(b"200 OK", _encoder.encode(completion)))
            self._done()
            return
        tail = STOP
        if (request.get("stream_options") or {}).get("include_usage"):
            tail += _chunk(None, usage=usage)
        self._tail = _framed(tail + DONE) + LAST
        self._left = count
        self._write(SSE_HEAD + ROLE)
        if self._delay:
            self._timer = asyncio.get_running_loop().call_later(self._delay, self._paced)
            return
        while self._left and self._transport is not None:  # instant: every chunk its own write
            self._left -= 1
            self._write(WORD)
        self._end_stream()

    def _paced(self) -> None:
        self._timer = None
        if self._transport is None:
            return
        self._left -= 1
        self._write(WORD)
        if self._left:
            self._timer = asyncio.get_running_loop().call_later(self._delay, self._paced)
        else:
            self._end_stream()

    def _end_stream(self) -> None:
        self._write(self._tail)
        self._done()

    def _done(self) -> None:
        if not self._keep_alive:
            self._close()

    def _write(self, data: bytes) -> None:
        if self._transport is not None:
            self._transport.write(data)

    def _close(self) -> None:
        if self._transport is not None:
            self._transport.close()


async def serve(port: int, tokens: int, tokens_per_s: float) -> None:
    loop = asyncio.get_running_loop()
    delay = 1.0 / tokens_per_s if tokens_per_s > 0 else 0.0
    server = await loop.create_server(lambda: _Exchange(tokens, delay), "127.0.0.1", port, backlog=4096)
    stop = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    async with server:
        await stop.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--tokens", type=int, default=50)
    parser.add_argument("--tokens-per-s", type=float, default=0.0)
    args = parser.parse_args()
    uvloop.run(serve(args.port, args.tokens, args.tokens_per_s))


if __name__ == "__main__":
    main()
