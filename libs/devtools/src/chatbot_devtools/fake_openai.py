"""A fake OpenAI-compatible upstream that speaks the Chat Completions wire format byte for byte.

It stands in for the provider in tests and benchmarks. The official `openai` SDK consuming it
is what proves it faithful (see the tests). Behaviour is set on the object: the reply, the pace
of tokens, and a queue of faults that the next requests meet.
"""

from __future__ import annotations

import asyncio
import re
import time
import uuid
from collections import deque
from typing import Any

import msgspec

ASGIScope = dict[str, Any]
_TOKEN = re.compile(r"\S+\s*|\s+")


def tokenize(text: str) -> list[str]:
    """The reply as the chunks it is streamed in (a word and its trailing space each); joined, it is `text`."""
    return _TOKEN.findall(text)


class Fault(msgspec.Struct, kw_only=True):
    """What goes wrong with one request."""

    status: int | None = None
    """Answer with this HTTP status and an OpenAI error body instead of a reply."""
    retry_after: float | None = None
    message: str = "fault injected by the fake upstream"
    drop_after: int | None = None
    """Close the connection after this many content chunks, without `[DONE]`."""
    error_after: int | None = None
    """Send an `{"error": …}` chunk after this many content chunks (HTTP status stays 200)."""
    malformed_after: int | None = None
    """Send a chunk that is not JSON after this many content chunks."""


class FakeOpenAI:
    """An ASGI app serving `POST /v1/chat/completions` (streamed or not) and `GET /v1/models`."""

    def __init__(self, reply: str | None = None, token_delay_s: float = 0.0, model: str = "fake-model") -> None:
        self.reply = reply
        self.token_delay_s = token_delay_s
        self.model = model
        self.base_url = ""
        """Where it is served, ending in /v1 (set by whoever serves it)."""
        self.faults: deque[Fault] = deque()
        self.requests: list[dict[str, Any]] = []
        self.disconnects: list[float] = []
        """Monotonic times at which a client closed a stream before its end."""
        self._encoder = msgspec.json.Encoder()

    def reply_for(self, body: dict[str, Any]) -> str:
        if self.reply is not None:
            return self.reply
        last = next((m.get("content") for m in reversed(body.get("messages", [])) if m.get("role") == "user"), "")
        return f"You said: {last}" if isinstance(last, str) else "You said something."

    @staticmethod
    def prompt_tokens(body: dict[str, Any]) -> int:
        return sum(len(tokenize(m.get("content") or "")) + 3 for m in body.get("messages", []) if isinstance(m.get("content"), str))

    async def __call__(self, scope: ASGIScope, receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while (await receive())["type"] != "lifespan.shutdown":
                pass
            await send({"type": "lifespan.shutdown.complete"})
            return
        path, method = scope["path"], scope["method"]
        if method == "GET" and path.endswith("/models"):
            await self._json(
                send, 200, {"object": "list", "data": [{"id": self.model, "object": "model", "created": 0, "owned_by": "fake"}]}
            )
            return
        if method != "POST" or not path.endswith("/chat/completions"):
            await self._json(send, 404, {"error": {"message": f"no route {method} {path}", "type": "invalid_request_error", "code": None}})
            return
        raw = b""
        while True:
            message = await receive()
            raw += message.get("body", b"")
            if not message.get("more_body"):
                break
        body = msgspec.json.decode(raw)
        self.requests.append(body)
        fault = self.faults.popleft() if self.faults else Fault()
        if fault.status is not None:
            headers = [(b"retry-after", str(fault.retry_after).encode())] if fault.retry_after is not None else []
            error_type = "rate_limit_error" if fault.status == 429 else "server_error"
            await self._json(
                send, fault.status, {"error": {"message": fault.message, "type": error_type, "code": None, "param": None}}, headers
            )
            return
        tokens = tokenize(self.reply_for(body))
        usage: dict[str, Any] = {"prompt_tokens": self.prompt_tokens(body), "completion_tokens": len(tokens)}
        usage["total_tokens"] = usage["prompt_tokens"] + usage["completion_tokens"]
        usage["prompt_tokens_details"] = {"cached_tokens": 0, "audio_tokens": 0}
        if not body.get("stream"):
            await self._json(send, 200, self._completion(tokens, usage))
            return
        await self._stream(send, receive, body, tokens, usage, fault)

    def _completion(self, tokens: list[str], usage: dict[str, Any]) -> dict[str, Any]:
        return {
            "id": f"chatcmpl-{uuid.uuid4().hex}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": self.model,
            "system_fingerprint": "fp_fake",
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": "".join(tokens), "refusal": None},
                    "logprobs": None,
                    "finish_reason": "stop",
                }
            ],
            "usage": usage,
        }

    async def _stream(self, send: Any, receive: Any, body: dict[str, Any], tokens: list[str], usage: dict[str, Any], fault: Fault) -> None:
        include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
        base = {
            "id": f"chatcmpl-{uuid.uuid4().hex}",
            "object": "chat.completion.chunk",
            "created": int(time.time()),
            "model": self.model,
            "system_fingerprint": "fp_fake",
        }
        extra = {"usage": None} if include_usage else {}

        def chunk(delta: dict[str, Any], finish_reason: str | None = None) -> bytes:
            data = {**base, "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}], **extra}
            return b"data: " + self._encoder.encode(data) + b"\n\n"

        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [(b"content-type", b"text/event-stream; charset=utf-8"), (b"cache-control", b"no-cache")],
            }
        )
        disconnected = asyncio.Event()

        async def watch() -> None:
            while (await receive())["type"] != "http.disconnect":
                pass
            disconnected.set()

        watcher = asyncio.create_task(watch())
        try:
            await send(
                {"type": "http.response.body", "body": chunk({"role": "assistant", "content": "", "refusal": None}), "more_body": True}
            )
            for index, token in enumerate(tokens):
                if fault.drop_after == index:
                    return
                if fault.error_after == index:
                    error = {"error": {"message": fault.message, "type": "server_error", "code": None, "param": None}}
                    await send(
                        {"type": "http.response.body", "body": b"data: " + self._encoder.encode(error) + b"\n\n", "more_body": False}
                    )
                    return
                if fault.malformed_after == index:
                    await send({"type": "http.response.body", "body": b"data: {not json\n\n", "more_body": True})
                if self.token_delay_s:
                    await asyncio.sleep(self.token_delay_s)
                if disconnected.is_set():
                    self.disconnects.append(time.monotonic())
                    return
                await send({"type": "http.response.body", "body": chunk({"content": token}), "more_body": True})
            tail = chunk({}, "stop")
            if include_usage:
                tail += b"data: " + self._encoder.encode({**base, "choices": [], "usage": usage}) + b"\n\n"
            await send({"type": "http.response.body", "body": tail + b"data: [DONE]\n\n", "more_body": False})
        finally:
            watcher.cancel()

    async def _json(self, send: Any, status: int, payload: Any, headers: list[tuple[bytes, bytes]] | None = None) -> None:
        await send({"type": "http.response.start", "status": status, "headers": [(b"content-type", b"application/json"), *(headers or [])]})
        await send({"type": "http.response.body", "body": self._encoder.encode(payload)})


def main() -> None:
    """`python -m chatbot_devtools.fake_openai --port 9000`: serve the fake for demos and benchmarks."""
    import argparse

    import uvicorn

    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("--port", type=int, default=9000)
    parser.add_argument("--reply", default=None, help="the reply to every request (default: echo the question)")
    parser.add_argument("--token-delay", type=float, default=0.0, help="seconds between tokens (0: as fast as possible)")
    args = parser.parse_args()
    app = FakeOpenAI(reply=args.reply, token_delay_s=args.token_delay)
    uvicorn.run(app, host="127.0.0.1", port=args.port, log_config=None, access_log=False, loop="uvloop", http="httptools", lifespan="off")


if __name__ == "__main__":
    main()
