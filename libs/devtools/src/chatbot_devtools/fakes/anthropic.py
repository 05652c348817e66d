"""A fake Anthropic Messages API: `POST /v1/messages`, streamed as Anthropic's named SSE events, or whole."""

from __future__ import annotations

import hashlib
import uuid
from typing import Any

import msgspec

from .base import FakeUpstream, Receive, Send, Stream, serve_main, tokenize

_ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    500: "api_error",
    529: "overloaded_error",
}


class FakeAnthropic(FakeUpstream):
    """Streams `message_start`, `content_block_*`, `ping`, `message_delta` (cumulative usage) and `message_stop`."""

    cache_read_tokens = 0
    """Reported as `cache_read_input_tokens` (the rest of the prompt as `input_tokens`)."""
    thought = "Let me think this through. "
    """The reasoning of a request with `thinking` enabled: a thinking block, signed, before the answer."""

    def prompt_tokens(self, body: dict[str, Any]) -> int:
        system = body.get("system") or ""
        return self.count(self.text_of(system), *(self.text_of(m.get("content")) for m in body.get("messages", [])))

    async def handle(
        self, method: str, path: str, query: str, headers: dict[str, str], body: dict[str, Any], send: Send, receive: Receive
    ) -> None:
        if method != "POST" or path != "/v1/messages":
            await self._error(send, 404, f"no route {method} {path}")
            return
        self.record(headers, body)
        fault = self.next_fault()
        if fault.status is not None:
            await self._error(send, fault.status, fault.message, self.retry_headers(fault))
            return
        last: dict[str, Any] = next((m for m in reversed(body.get("messages", [])) if m.get("role") == "user"), {})
        tokens = tokenize(self.reply_to(self.text_of(last.get("content"))))
        prompt = self.prompt_tokens(body)
        call = self._tool_to_call(body)
        usage = {
            "input_tokens": prompt - self.cache_read_tokens,
            "cache_creation_input_tokens": 0,
            "cache_read_input_tokens": self.cache_read_tokens,
        }
        message = {
            "id": f"msg_{uuid.uuid4().hex[:24]}",
            "type": "message",
            "role": "assistant",
            "model": body.get("model", self.model),
            "stop_sequence": None,
        }
        if call is not None:
            await self._call_tool(send, receive, body, message, usage, call)
            return
        thinking = (body.get("thinking") or {}).get("type") in ("enabled", "adaptive")
        signature = "sig-" + hashlib.sha256(self.thought.encode()).hexdigest()[:16]
        if not body.get("stream"):
            content = [{"type": "text", "text": "".join(tokens)}]
            if thinking:
                content.insert(0, {"type": "thinking", "thinking": self.thought, "signature": signature})
            await self.json(
                send, 200, {**message, "content": content, "stop_reason": "end_turn", "usage": {**usage, "output_tokens": len(tokens)}}
            )
            return
        stream = Stream(self, send, receive)
        try:
            await stream.start(b"text/event-stream; charset=utf-8")
            await stream.send(
                self._event(
                    "message_start", {"message": {**message, "content": [], "stop_reason": None, "usage": {**usage, "output_tokens": 1}}}
                )
            )
            block = 0
            if thinking:
                await stream.send(
                    self._event("content_block_start", {"index": 0, "content_block": {"type": "thinking", "thinking": "", "signature": ""}})
                )
                for piece in tokenize(self.thought):
                    await stream.send(
                        self._event("content_block_delta", {"index": 0, "delta": {"type": "thinking_delta", "thinking": piece}})
                    )
                delta = {"type": "signature_delta", "signature": signature}
                await stream.send(
                    self._event("content_block_delta", {"index": 0, "delta": delta}) + self._event("content_block_stop", {"index": 0})
                )
                block = 1
            await stream.send(
                self._event("content_block_start", {"index": block, "content_block": {"type": "text", "text": ""}})
                + self._event("ping", {})
            )
            stop_reason = "end_turn"
            for index, token in enumerate(tokens):
                if fault.drop_after == index:
                    return
                if fault.error_after == index:
                    await stream.send(self._event("error", {"error": {"type": "overloaded_error", "message": fault.message}}), last=True)
                    return
                if fault.malformed_after == index:
                    await stream.send(b"event: content_block_delta\ndata: {not json\n\n")
                if fault.filtered_after == index:
                    stop_reason = "refusal"
                    tokens = tokens[:index]
                    break
                if not await stream.send(
                    self._event("content_block_delta", {"index": block, "delta": {"type": "text_delta", "text": token}}), pace=True
                ):
                    return
            tail = self._event("content_block_stop", {"index": block})
            tail += self._event(
                "message_delta", {"delta": {"stop_reason": stop_reason, "stop_sequence": None}, "usage": {"output_tokens": len(tokens)}}
            )
            tail += self._event("message_stop", {})
            await stream.send(tail, last=True)
        finally:
            await stream.close()

    def _tool_to_call(self, body: dict[str, Any]) -> tuple[str, str] | None:
        """The tool this reply calls: the one `tool_choice` forces (its input is the reply, as JSON text), or
        `tool_call` when tools are offered and not ruled out."""
        choice = body.get("tool_choice") or {}
        if choice.get("type") == "tool":
            if self.tool_call is not None and self.tool_call[0] == choice.get("name"):
                return self.tool_call
            return str(choice.get("name")), self.reply_to("")
        content = (body.get("messages") or [{}])[-1].get("content")
        answered = isinstance(content, list) and any(block.get("type") == "tool_result" for block in content)
        if self.tool_call is not None and body.get("tools") and choice.get("type") != "none" and not answered:
            return self.tool_call
        return None

    async def _call_tool(
        self, send: Send, receive: Receive, body: dict[str, Any], message: dict[str, Any], usage: dict[str, Any], call: tuple[str, str]
    ) -> None:
        name, arguments = call
        block = {"type": "tool_use", "id": f"toolu_{uuid.uuid4().hex[:24]}", "name": name}
        pieces = tokenize(arguments) or [""]
        usage = {**usage, "output_tokens": len(pieces)}
        if not body.get("stream"):
            content = [{**block, "input": msgspec.json.decode(arguments)}]
            await self.json(send, 200, {**message, "content": content, "stop_reason": "tool_use", "usage": usage})
            return
        stream = Stream(self, send, receive)
        try:
            await stream.start(b"text/event-stream; charset=utf-8")
            start = {**message, "content": [], "stop_reason": None, "usage": {**usage, "output_tokens": 1}}
            await stream.send(self._event("message_start", {"message": start}))
            await stream.send(self._event("content_block_start", {"index": 0, "content_block": {**block, "input": {}}}))
            for piece in ["", *pieces]:
                delta = {"type": "input_json_delta", "partial_json": piece}
                await stream.send(self._event("content_block_delta", {"index": 0, "delta": delta}), pace=True)
            tail = self._event("content_block_stop", {"index": 0})
            tail += self._event("message_delta", {"delta": {"stop_reason": "tool_use", "stop_sequence": None}, "usage": usage})
            await stream.send(tail + self._event("message_stop", {}), last=True)
        finally:
            await stream.close()

    def _event(self, name: str, data: dict[str, Any]) -> bytes:
        return b"event: " + name.encode() + b"\ndata: " + self.encoder.encode({"type": name, **data}) + b"\n\n"

    async def _error(self, send: Send, status: int, message: str, headers: list[tuple[bytes, bytes]] | None = None) -> None:
        error = {"type": "error", "error": {"type": _ERROR_TYPES.get(status, "api_error"), "message": message}}
        await self.json(send, status, error, [(b"request-id", b"req_fake"), *(headers or [])])


def main() -> None:
    """`python -m chatbot_devtools.fakes.anthropic --port 9001`."""
    serve_main(FakeAnthropic, 9001)


if __name__ == "__main__":
    main()
