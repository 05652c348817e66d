"""The platform's services as child processes: started, watched, restarted, stopped."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import IO

import httpx

STOP_SIGNALS = (signal.SIGTERM, signal.SIGHUP)
"""What a CI runner's timeout or a closed terminal sends; `make test` and its pytest stop on them as on Ctrl-C."""

COMMANDS = {
    "gateway": "chatbot-gateway",
    "inference": "chatbot-inference",
    "conversation": "chatbot-conversation",
    "ingest": "chatbot-ingest",
    "log-collector": "chatbot-log-collector",
}


def command(service: str) -> list[str]:
    """The console command of a service, from the same environment as this Python."""
    return [str(Path(sys.executable).with_name(COMMANDS[service]))]


class ServiceProcess:
    """One service process. It runs in a session of its own, so a terminal's Ctrl-C reaches only the supervisor."""

    def __init__(self, name: str, service: str, env: dict[str, str], log_path: Path | None = None) -> None:
        self.name = name
        self.service = service
        self.env = env
        self.log_path = log_path
        self.process: subprocess.Popen[bytes] | None = None
        self.restarts = 0
        self._log: IO[bytes] | None = None

    def start(self) -> ServiceProcess:
        if self.log_path is not None:
            self.log_path.parent.mkdir(parents=True, exist_ok=True)
            self._log = self.log_path.open("ab")
        self.process = subprocess.Popen(
            command(self.service), env=self.env, stdout=self._log, stderr=subprocess.STDOUT if self._log else None, start_new_session=True
        )
        return self

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def rss_bytes(self) -> int:
        """The process's resident memory (Linux)."""
        with open(f"/proc/{self.pid}/status") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
        return 0

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def signal(self, sig: signal.Signals) -> None:
        if self.alive():
            os.kill(self.pid, sig)

    def kill(self) -> None:
        """Die at once, as a crash would (SIGKILL)."""
        if self.process is not None and self.alive():
            self.process.kill()
            self.process.wait()

    def stop(self, grace_s: float = 15.0) -> None:
        """SIGTERM, then SIGKILL after `grace_s`."""
        if self.process is None:
            return
        if self.alive():
            self.process.terminate()
            try:
                self.process.wait(timeout=grace_s)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        if self._log is not None:
            self._log.close()
            self._log = None

    def wait_http(self, url: str, timeout_s: float = 30.0, status: int = 200, also_alive: list[ServiceProcess] = []) -> None:  # noqa: B006
        """Wait until `url` answers `status`; fail early if this process (or one of `also_alive`) dies."""
        deadline = time.monotonic() + timeout_s
        last = "no answer"
        while time.monotonic() < deadline:
            for process in (self, *also_alive):
                if not process.alive():
                    code = process.process.returncode if process.process else "?"
                    raise RuntimeError(f"{process.name} exited with {code}{process._log_tail()}")
            try:
                response = httpx.get(url, timeout=1.0)
                if response.status_code == status:
                    return
                last = f"{response.status_code} {response.text[:200]}"
            except httpx.HTTPError as exc:
                last = str(exc) or type(exc).__name__
            time.sleep(0.1)
        raise TimeoutError(f"{self.name}: {url} did not answer {status} within {timeout_s}s (last: {last}){self._log_tail()}")

    def _log_tail(self) -> str:
        if self.log_path is None or not self.log_path.exists():
            return ""
        return "\n--- log tail ---\n" + "\n".join(line[:400] for line in self.log_path.read_text(errors="replace").splitlines()[-15:])
