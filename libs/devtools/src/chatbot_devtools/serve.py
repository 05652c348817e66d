"""Serve an ASGI app on a free local port in a background thread (tests, benchmarks, demos)."""

from __future__ import annotations

import threading
import time
from typing import Any, Literal

import uvicorn

from .redis_server import free_port


class ThreadedServer:
    """A uvicorn server of its own event loop, in a daemon thread."""

    def __init__(self, app: Any, port: int | None = None, lifespan: Literal["on", "off"] = "off") -> None:
        self.port = port or free_port()
        config = uvicorn.Config(app, host="127.0.0.1", port=self.port, log_config=None, access_log=False, lifespan=lifespan, loop="asyncio")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True, name=f"asgi:{self.port}")

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout_s: float = 10.0) -> ThreadedServer:
        self.thread.start()
        deadline = time.monotonic() + timeout_s
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError(f"the server on port {self.port} did not start")
            time.sleep(0.01)
        return self

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)
