"""A fake OpenAI-compatible upstream: `POST /v1/chat/completions` (streamed or whole) and `GET /v1/models`."""

from __future__ import annotations

import base64
import struct
import time
import uuid
from typing import Any

from .base import FakeUpstream, Fault, Receive, Send, Stream, fake_vector, serve_main, tokenize

__all__ = ["FakeOpenAI", "Fault", "tokenize"]


class FakeOpenAI(FakeUpstream):
    """Chat Completions as OpenAI streams it: a role chunk, content chunks, a finish chunk, usage, `[DONE]`."""

    @staticmethod
    def prompt_tokens(body: dict[str, Any]) -> int:
        return sum(len(tokenize(m.get("content") or "")) + 3 for m in body.get("messages", []) if isinstance(m.get("content"), str))

    def reply_for(self, body: dict[str, Any]) -> str:
        last = next((m.get("content") for m in reversed(body.get("messages", [])) if m.get("role") == "user"), "")
        return self.reply_to(last if isinstance(last, str) else "something")

    async def handle(
        self, method: str, path: str, query: str, headers: dict[str, str], body: dict[str, Any], send: Send, receive: Receive
    ) -> None:
        if method == "GET" and path.endswith("/models"):
            await self.json(
                send, 200, {"object": "list", "data": [{"id": self.model, "object": "model", "created": 0, "owned_by": "fake"}]}
            )
            return
        if method == "POST" and path.endswith("/embeddings"):
            await self._embeddings(send, headers, body)
            return
        if method != "POST" or not path.endswith("/chat/completions"):
            await self.json(send, 404, {"error": {"message": f"no route {method} {path}", "type": "invalid_request_error", "code": None}})
            return
        self.record(headers, body)
        fault = self.next_fault()
        if fault.status is not None:
            error_type = "rate_limit_error" if fault.status == 429 else "invalid_request_error" if fault.status < 500 else "server_error"
            await self.json(
                send,
                fault.status,
                {"error": {"message": fault.message, "type": error_type, "code": None, "param": None}},
                self.retry_headers(fault),
            )
            return
        answered = (body.get("messages") or [{}])[-1].get("role") == "tool"
        if self.tool_call is not None and body.get("tools") and body.get("tool_choice") != "none" and not answered:
            await self._call_tool(send, receive, body)
            return
        tokens = tokenize(self.reply_for(body))
        usage: dict[str, Any] = {"prompt_tokens": self.prompt_tokens(body), "completion_tokens": len(tokens)}
        usage["total_tokens"] = usage["prompt_tokens"] + usage["completion_tokens"]
        usage["prompt_tokens_details"] = {"cached_tokens": 0, "audio_tokens": 0}
        if not body.get("stream"):
            await self.json(send, 200, self._completion(tokens, usage))
            return
        stream = Stream(self, send, receive)
        try:
            await self._stream(stream, body, tokens, usage, fault)
        finally:
            await stream.close()

    async def _embeddings(self, send: Send, headers: dict[str, str], body: dict[str, Any]) -> None:
        """`/embeddings` as OpenAI answers it: base64 of float32 values when asked (as the SDK does), else floats."""
        self.record(headers, body)
        fault = self.next_fault()
        if fault.status is not None:
            error = {"error": {"message": fault.message, "type": "invalid_request_error", "code": None, "param": None}}
            await self.json(send, fault.status, error, self.retry_headers(fault))
            return
        texts = body["input"] if isinstance(body.get("input"), list) else [body.get("input", "")]
        data = []
        for index, text in enumerate(texts):
            vector = fake_vector(str(text), int(body.get("dimensions") or 8))
            encoded: Any = vector
            if body.get("encoding_format") == "base64":
                encoded = base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode()
            data.append({"object": "embedding", "index": index, "embedding": encoded})
        tokens = sum(len(tokenize(str(text))) for text in texts)
        await self.json(
            send,
            200,
            {
                "object": "list",
                "data": data,
                "model": body.get("model", self.model),
                "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
            },
        )

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

    async def _stream(self, stream: Stream, body: dict[str, Any], tokens: list[str], usage: dict[str, Any], fault: Fault) -> None:
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
            return b"data: " + self.encoder.encode(data) + b"\n\n"

        await stream.start(b"text/event-stream; charset=utf-8")
        await stream.send(chunk({"role": "assistant", "content": "", "refusal": None}))
        for index, token in enumerate(tokens):
            if fault.drop_after == index:
                return
            if fault.error_after == index:
                error = {"error": {"message": fault.message, "type": "server_error", "code": None, "param": None}}
                await stream.send(b"data: " + self.encoder.encode(error) + b"\n\n", last=True)
                return
            if fault.malformed_after == index:
                await stream.send(b"data: {not json\n\n")
            if not await stream.send(chunk({"content": token}), pace=True):
                return
        tail = chunk({}, "stop")
        if include_usage:
            tail += b"data: " + self.encoder.encode({**base, "choices": [], "usage": usage}) + b"\n\n"
        await stream.send(tail + b"data: [DONE]\n\n", last=True)

    async def _call_tool(self, send: Send, receive: Receive, body: dict[str, Any]) -> None:
        assert self.tool_call is not None
        name, arguments = self.tool_call
        call_id = f"call_{uuid.uuid4().hex[:24]}"
        pieces = tokenize(arguments) or [""]
        usage = {
            "prompt_tokens": self.prompt_tokens(body),
            "completion_tokens": len(pieces),
            "total_tokens": self.prompt_tokens(body) + len(pieces),
        }
        base = {"id": f"chatcmpl-{uuid.uuid4().hex}", "created": int(time.time()), "model": self.model, "system_fingerprint": "fp_fake"}
        if not body.get("stream"):
            call = {"id": call_id, "type": "function", "function": {"name": name, "arguments": arguments}}
            message = {"role": "assistant", "content": None, "refusal": None, "tool_calls": [call]}
            await self.json(
                send,
                200,
                {
                    **base,
                    "object": "chat.completion",
                    "choices": [{"index": 0, "message": message, "logprobs": None, "finish_reason": "tool_calls"}],
                    "usage": usage,
                },
            )
            return
        include_usage = bool((body.get("stream_options") or {}).get("include_usage"))

        def chunk(delta: dict[str, Any], finish_reason: str | None = None) -> bytes:
            data = {
                **base,
                "object": "chat.completion.chunk",
                "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}],
            }
            return b"data: " + self.encoder.encode(data) + b"\n\n"

        stream = Stream(self, send, receive)
        try:
            await stream.start(b"text/event-stream; charset=utf-8")
            first = {"index": 0, "id": call_id, "type": "function", "function": {"name": name, "arguments": ""}}
            await stream.send(chunk({"role": "assistant", "content": None, "tool_calls": [first]}))
            for piece in pieces:
                await stream.send(chunk({"tool_calls": [{"index": 0, "function": {"arguments": piece}}]}), pace=True)
            tail = chunk({}, "tool_calls")
            if include_usage:
                tail += (
                    b"data: " + self.encoder.encode({**base, "object": "chat.completion.chunk", "choices": [], "usage": usage}) + b"\n\n"
                )
            await stream.send(tail + b"data: [DONE]\n\n", last=True)
        finally:
            await stream.close()


def main() -> None:
    """`python -m chatbot_devtools.fakes.openai --port 9000`."""
    serve_main(FakeOpenAI, 9000)


if __name__ == "__main__":
    main()
