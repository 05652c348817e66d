"""uvicorn against granian for what the gateway's SSE path asks of its server: paced streams of OpenAI chunks.

The app below is a Litestar route that streams a chunk every 50 ms from an async generator, as the gateway relays
a paced answer; each server runs it in one process on uvloop, and the load client (`loadclient.py`) opens 100 and
300 streams at once. Printed: the server's CPU per delivered token, rounds alternating. Not part of `make bench`
(run it with `.venv/bin/python bench/asgi_servers.py`); the figures are in `bench/README.md`, Round 14.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import msgspec
from litestar import Litestar, Request, post
from litestar.response import Stream

_encode = msgspec.json.Encoder().encode


def _chunk(delta: dict[str, str], finish: str | None) -> bytes:
    choice = {"index": 0, "delta": delta, "finish_reason": finish}
    return b"data: " + _encode({"id": "c", "object": "chat.completion.chunk", "choices": [choice]}) + b"\n\n"


@post("/v1/chat/completions", status_code=200)
async def chat(request: Request[Any, Any, Any]) -> Stream:
    tokens = int(msgspec.json.decode(await request.body()).get("max_tokens") or 50)

    async def chunks() -> AsyncIterator[bytes]:
        for _ in range(tokens):
            await asyncio.sleep(0.05)
            yield _chunk({"content": "tok "}, None)
        yield _chunk({}, "stop")
        yield b"data: [DONE]\n\n"

    return Stream(chunks(), media_type="text/event-stream")


app = Litestar([chat])


def main() -> None:
    import subprocess
    import sys
    import time
    from pathlib import Path

    import uvloop
    from gateways import Target, cpu_seconds, many_streams

    from chatbot_devtools.redis_server import free_port

    here = Path(__file__).parent
    servers = {
        "uvicorn": ["-m", "uvicorn", "asgi_servers:app", "--loop", "uvloop", "--http", "httptools", "--no-access-log", "--port"],
        "granian": ["-m", "granian", "--interface", "asgi", "--loop", "uvloop", "--workers", "1", "--no-ws", "asgi_servers:app", "--port"],
    }
    for streams in (100, 300):
        for name in [*servers, *servers]:
            port = free_port()
            process = subprocess.Popen(
                [sys.executable, *servers[name], str(port)], cwd=here, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
            )
            try:
                time.sleep(3)
                children = subprocess.run(["pgrep", "-P", str(process.pid)], capture_output=True, text=True).stdout.split()
                pids = [process.pid, *map(int, children)]
                before = cpu_seconds(pids)
                samples = uvloop.run(many_streams(Target(name, f"http://127.0.0.1:{port}/v1", "m", "k"), streams, 300, "m"))
                tokens = sum(sample.tokens for sample in samples)
                errors = sum(1 for sample in samples if sample.error)
                print(
                    f"{name}, {streams} streams: {(cpu_seconds(pids) - before) / max(tokens, 1) * 1e6:.1f} µs per token ({errors} errors)"
                )
            finally:
                process.terminate()
                process.wait()


if __name__ == "__main__":
    main()
