"""A fake OpenAI-compatible upstream for the gateway benchmark: every target is pointed at it.

Two modes: instant (`--tokens-per-s 0`: chunks as fast as it can write them) and paced (N tokens
per second per stream). Each request's answer has `max_tokens` tokens (default `--tokens`), one
word per chunk, then a usage chunk when asked (`stream_options.include_usage`) and `[DONE]`.
Chunks are encoded once, up front, so the upstream costs as little as it can.

    python bench/upstream.py --port 9000 [--tokens-per-s 20]
"""

from __future__ import annotations

import argparse
import asyncio
from typing import Any

import msgspec
import uvicorn

_encoder = msgspec.json.Encoder()


def _chunk(content: str | None, finish: str | None = None, usage: dict[str, int] | None = None) -> bytes:
    body: dict[str, Any] = {
        "id": "chatcmpl-bench", "object": "chat.completion.chunk", "created": 0, "model": "bench-model",
        "choices": [] if usage else [{"index": 0, "delta": {"content": content} if content else {}, "finish_reason": finish}],
    }  # fmt: skip
    if usage:
        body["usage"] = usage
    return b"data: " + _encoder.encode(body) + b"\n\n"


WORD = _chunk("tok ")
ROLE = b"data: " + _encoder.encode(
    {"id": "chatcmpl-bench", "object": "chat.completion.chunk", "created": 0, "model": "bench-model",
     "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}]}
) + b"\n\n"  # fmt: skip
STOP = _chunk(None, "stop")
DONE = b"data: [DONE]\n\n"
SSE = [(b"content-type", b"text/event-stream"), (b"cache-control", b"no-cache")]


class Upstream:
    def __init__(self, tokens: int, tokens_per_s: float) -> None:
        self.tokens = tokens
        self.delay = 1.0 / tokens_per_s if tokens_per_s > 0 else 0.0

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while (await receive())["type"] != "lifespan.shutdown":
                await send({"type": "lifespan.startup.complete"})
            await send({"type": "lifespan.shutdown.complete"})
            return
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        if scope["path"].endswith("/models"):
            listing = {"object": "list", "data": [{"id": "bench-model", "object": "model", "created": 0, "owned_by": "bench"}]}
            await self._send(send, 200, [(b"content-type", b"application/json")], _encoder.encode(listing))
            return
        request = msgspec.json.decode(body or b"{}")
        count = int(request.get("max_tokens") or request.get("max_completion_tokens") or self.tokens)
        usage = {"prompt_tokens": 10, "completion_tokens": count, "total_tokens": 10 + count}
        if not request.get("stream"):
            completion = {
                "id": "chatcmpl-bench", "object": "chat.completion", "created": 0, "model": "bench-model", "usage": usage,
                "choices": [{"index": 0, "message": {"role": "assistant", "content": "tok " * count}, "finish_reason": "stop"}],
            }  # fmt: skip
            await self._send(send, 200, [(b"content-type", b"application/json")], _encoder.encode(completion))
            return
        await send({"type": "http.response.start", "status": 200, "headers": SSE})
        await send({"type": "http.response.body", "body": ROLE, "more_body": True})
        for _ in range(count):
            if self.delay:
                await asyncio.sleep(self.delay)
            await send({"type": "http.response.body", "body": WORD, "more_body": True})
        tail = STOP
        if (request.get("stream_options") or {}).get("include_usage"):
            tail += _chunk(None, usage=usage)
        await send({"type": "http.response.body", "body": tail + DONE, "more_body": False})

    @staticmethod
    async def _send(send: Any, status: int, headers: list[tuple[bytes, bytes]], body: bytes) -> None:
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--tokens", type=int, default=50)
    parser.add_argument("--tokens-per-s", type=float, default=0.0)
    args = parser.parse_args()
    uvicorn.run(
        Upstream(args.tokens, args.tokens_per_s), host="127.0.0.1", port=args.port, loop="uvloop", http="httptools",
        log_level="warning", access_log=False, backlog=4096,
    )  # fmt: skip


if __name__ == "__main__":
    main()
