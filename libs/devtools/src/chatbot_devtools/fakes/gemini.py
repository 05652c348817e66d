"""A fake Gemini API: `models/{m}:streamGenerateContent?alt=sse` and `models/{m}:generateContent`."""

from __future__ import annotations

from typing import Any

import msgspec

from .base import FakeUpstream, Receive, Send, Stream, fake_vector, serve_main, tokenize

_STATUS = {
    400: "INVALID_ARGUMENT",
    401: "UNAUTHENTICATED",
    403: "PERMISSION_DENIED",
    404: "NOT_FOUND",
    429: "RESOURCE_EXHAUSTED",
    500: "INTERNAL",
    503: "UNAVAILABLE",
    504: "DEADLINE_EXCEEDED",
}


class FakeGemini(FakeUpstream):
    """Streams `GenerateContentResponse` objects as SSE (`\\r\\n\\r\\n`-separated), usage in `usageMetadata`."""

    block_prompt = False
    """Refuse the prompt itself (`promptFeedback.blockReason`, no candidates)."""

    def prompt_tokens(self, body: dict[str, Any]) -> int:
        system = body.get("systemInstruction") or {}
        texts = [self.text_of(system.get("parts"))]
        texts += [self.text_of(c.get("parts")) for c in body.get("contents", [])]
        return self.count(*texts)

    async def handle(
        self, method: str, path: str, query: str, headers: dict[str, str], body: dict[str, Any], send: Send, receive: Receive
    ) -> None:
        if method == "POST" and path.endswith(":batchEmbedContents"):
            self.record(headers, body)
            embeddings = []
            for item in body.get("requests", []):
                text = self.text_of((item.get("content") or {}).get("parts"))
                embeddings.append({"values": fake_vector(text, int(item.get("outputDimensionality") or 8))})
            await self.json(send, 200, {"embeddings": embeddings})
            return
        streaming = path.endswith(":streamGenerateContent")
        if method != "POST" or not (streaming or path.endswith(":generateContent")) or "/models/" not in path:
            await self._error(send, 404, f"no route {method} {path}")
            return
        self.record(headers, body)
        fault = self.next_fault()
        if fault.status is not None:
            await self._error(send, fault.status, fault.message, self.retry_headers(fault))
            return
        last: dict[str, Any] = next((c for c in reversed(body.get("contents", [])) if c.get("role", "user") == "user"), {})
        tokens = tokenize(self.reply_to(self.text_of(last.get("parts"))))
        prompt = self.prompt_tokens(body)
        model_version = path.rsplit("/", 1)[-1].split(":", 1)[0]
        if self.block_prompt:
            blocked = {
                "promptFeedback": {"blockReason": "SAFETY"},
                "usageMetadata": {"promptTokenCount": prompt, "totalTokenCount": prompt},
                "modelVersion": model_version,
            }
            await self._one(send, receive, blocked, streaming)
            return
        mode = ((body.get("toolConfig") or {}).get("functionCallingConfig") or {}).get("mode")
        answered = any("functionResponse" in part for part in (body.get("contents") or [{}])[-1].get("parts", []))
        if self.tool_call is not None and body.get("tools") and mode != "NONE" and not answered:
            name, arguments = self.tool_call
            response = self._response("", "STOP", prompt, 1, model_version)
            response["candidates"][0]["content"]["parts"] = [{"functionCall": {"name": name, "args": msgspec.json.decode(arguments)}}]
            await self._one(send, receive, response, streaming)
            return
        if not streaming:
            await self.json(send, 200, self._response("".join(tokens), "STOP", prompt, len(tokens), model_version))
            return
        stream = Stream(self, send, receive)
        try:
            await stream.start(b"text/event-stream")
            finish = "STOP"
            for index, token in enumerate(tokens):
                if fault.drop_after == index:
                    return
                if fault.error_after == index:
                    error = {"error": {"code": 503, "message": fault.message, "status": "UNAVAILABLE"}}
                    await stream.send(b"data: " + self.encoder.encode(error) + b"\r\n\r\n", last=True)
                    return
                if fault.malformed_after == index:
                    await stream.send(b"data: {not json\r\n\r\n")
                if fault.filtered_after == index:
                    finish = "SAFETY"
                    tokens = tokens[:index]
                    break
                last_token = index == len(tokens) - 1
                chunk = self._response(token, finish if last_token else None, prompt, index + 1, model_version)
                if not await stream.send(b"data: " + self.encoder.encode(chunk) + b"\r\n\r\n", pace=True):
                    return
            if finish != "STOP" or not tokens:
                chunk = self._response("", finish, prompt, len(tokens), model_version)
                await stream.send(b"data: " + self.encoder.encode(chunk) + b"\r\n\r\n")
            await stream.send(b"", last=True)
        finally:
            await stream.close()

    async def _one(self, send: Send, receive: Receive, response: dict[str, Any], streaming: bool) -> None:
        """An answer of one response: the whole body, or a stream of that one event."""
        if not streaming:
            await self.json(send, 200, response)
            return
        stream = Stream(self, send, receive)
        await stream.start(b"text/event-stream")
        await stream.send(b"data: " + self.encoder.encode(response) + b"\r\n\r\n", last=True)
        await stream.close()

    @staticmethod
    def _response(text: str, finish: str | None, prompt: int, output: int, model_version: str) -> dict[str, Any]:
        candidate: dict[str, Any] = {"content": {"parts": [{"text": text}], "role": "model"}, "index": 0}
        if finish:
            candidate["finishReason"] = finish
        return {
            "candidates": [candidate],
            "usageMetadata": {"promptTokenCount": prompt, "candidatesTokenCount": output, "totalTokenCount": prompt + output},
            "modelVersion": model_version,
            "responseId": "fake-response",
        }

    async def _error(self, send: Send, status: int, message: str, headers: list[tuple[bytes, bytes]] | None = None) -> None:
        await self.json(send, status, {"error": {"code": status, "message": message, "status": _STATUS.get(status, "UNKNOWN")}}, headers)


def main() -> None:
    """`python -m chatbot_devtools.fakes.gemini --port 9002`."""
    serve_main(FakeGemini, 9002)


if __name__ == "__main__":
    main()
