"""A fake Ollama server: `POST /api/chat` as NDJSON (or whole), `GET /api/tags`, `GET /api/version`."""

from __future__ import annotations

import time
import uuid
from typing import Any

import msgspec

from .base import FakeUpstream, Receive, Send, Stream, fake_vector, serve_main, tokenize


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S.000000000Z", time.gmtime())


class FakeOllama(FakeUpstream):
    """One JSON object a line; the last has `done: true`, `done_reason`, `prompt_eval_count`, `eval_count`."""

    def prompt_tokens(self, body: dict[str, Any]) -> int:
        return self.count(*(self.text_of(m.get("content")) for m in body.get("messages", [])))

    async def handle(
        self, method: str, path: str, query: str, headers: dict[str, str], body: dict[str, Any], send: Send, receive: Receive
    ) -> None:
        if method == "GET" and path == "/api/tags":
            model = {
                "name": self.model,
                "model": self.model,
                "modified_at": _now(),
                "size": 1,
                "digest": "0" * 64,
                "details": {"format": "gguf", "family": "fake"},
            }
            await self.json(send, 200, {"models": [model]})
            return
        if method == "GET" and path == "/api/version":
            await self.json(send, 200, {"version": "0.12.0"})
            return
        if method == "POST" and path == "/api/embed":
            self.record(headers, body)
            texts = body["input"] if isinstance(body.get("input"), list) else [body.get("input", "")]
            dimensions = int(body.get("dimensions") or 8)
            answer = {
                "model": body.get("model", self.model),
                "embeddings": [fake_vector(str(text), dimensions) for text in texts],
                "total_duration": 1000,
                "load_duration": 10,
                "prompt_eval_count": sum(len(tokenize(str(text))) for text in texts),
            }
            await self.json(send, 200, answer)
            return
        if method != "POST" or path != "/api/chat":
            await self.json(send, 404, {"error": f"no route {method} {path}"})
            return
        self.record(headers, body)
        fault = self.next_fault()
        if fault.status is not None:
            await self.json(send, fault.status, {"error": fault.message}, self.retry_headers(fault))
            return
        last: dict[str, Any] = next((m for m in reversed(body.get("messages", [])) if m.get("role") == "user"), {})
        tokens = tokenize(self.reply_to(self.text_of(last.get("content"))))
        model = body.get("model", self.model)
        final = {
            "done": True,
            "done_reason": "stop",
            "total_duration": 1000,
            "load_duration": 10,
            "prompt_eval_count": self.prompt_tokens(body),
            "prompt_eval_duration": 100,
            "eval_count": len(tokens),
            "eval_duration": 800,
        }
        answered = (body.get("messages") or [{}])[-1].get("role") == "tool"
        if self.tool_call is not None and body.get("tools") and not answered:
            name, arguments = self.tool_call
            call = {
                "id": f"call_{uuid.uuid4().hex[:8]}",
                "function": {"index": 0, "name": name, "arguments": msgspec.json.decode(arguments)},
            }
            reply = {"model": model, "created_at": _now(), "message": {"role": "assistant", "content": "", "tool_calls": [call]}}
            if body.get("stream") is False:
                await self.json(send, 200, {**reply, **final, "eval_count": 1})
                return
            stream = Stream(self, send, receive)
            await stream.start(b"application/x-ndjson")
            end = {"model": model, "created_at": _now(), "message": {"role": "assistant", "content": ""}, **final, "eval_count": 1}
            await stream.send(self.encoder.encode({**reply, "done": False}) + b"\n" + self.encoder.encode(end) + b"\n", last=True)
            await stream.close()
            return
        if body.get("stream") is False:
            await self.json(
                send, 200, {"model": model, "created_at": _now(), "message": {"role": "assistant", "content": "".join(tokens)}, **final}
            )
            return
        stream = Stream(self, send, receive)
        try:
            await stream.start(b"application/x-ndjson")
            for index, token in enumerate(tokens):
                if fault.drop_after == index:
                    return
                if fault.error_after == index:
                    await stream.send(self.encoder.encode({"error": fault.message}) + b"\n", last=True)
                    return
                if fault.malformed_after == index:
                    await stream.send(b"{not json\n")
                line = {"model": model, "created_at": _now(), "message": {"role": "assistant", "content": token}, "done": False}
                if not await stream.send(self.encoder.encode(line) + b"\n", pace=True):
                    return
            line = {"model": model, "created_at": _now(), "message": {"role": "assistant", "content": ""}, **final}
            await stream.send(self.encoder.encode(line) + b"\n", last=True)
        finally:
            await stream.close()


def main() -> None:
    """`python -m chatbot_devtools.fakes.ollama --port 11434`."""
    serve_main(FakeOllama, 11434)


if __name__ == "__main__":
    main()
