"""The platform's processes for end-to-end and fault-injection tests: real services, real Redis."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import httpx

from .fakes.base import FakeUpstream
from .processes import ServiceProcess
from .redis_server import free_port

INTERNAL_SECRET = "test-internal-secret-0123456789abcdef"
"""The secret test platforms sign internal calls with (`CHATBOT_INTERNAL_SECRET`)."""


def registry_toml(aliases: dict[str, dict[str, object]]) -> str:
    """A registry file with these aliases (values written as TOML literals)."""
    lines: list[str] = []
    for alias, fields in aliases.items():
        lines.append(f'[models."{alias}"]')
        for key, value in fields.items():
            if isinstance(value, str):
                lines.append(f'{key} = "{value}"')
            elif isinstance(value, list):
                lines.append(f"{key} = [" + ", ".join(f'"{v}"' for v in value) + "]")
            else:
                lines.append(f"{key} = {str(value).lower() if isinstance(value, bool) else value}")
        lines.append("")
    return "\n".join(lines)


def every_provider(
    openai: FakeUpstream, anthropic: FakeUpstream, gemini: FakeUpstream, ollama: FakeUpstream
) -> dict[str, dict[str, object]]:
    """Aliases `gpt`, `claude`, `gemini` and `llama` served by the four vendors' fakes, and `local`, a llama.cpp model that
    is never loaded (what only it refuses is refused before it would be)."""
    return {
        "gpt": {"provider": "openai", "upstream_model": "gpt-fake", "base_url": openai.base_url},
        "claude": {"provider": "anthropic", "upstream_model": "claude-fake", "base_url": anthropic.base_url},
        "gemini": {"provider": "gemini", "upstream_model": "gemini-fake", "base_url": gemini.base_url},
        "llama": {"provider": "ollama", "upstream_model": "llama-fake:latest", "base_url": ollama.base_url},
        "local": {"provider": "llamacpp", "upstream_model": "x", "model_path": "/nonexistent.gguf"},
    }


class LocalPlatform:
    """Gateways and workers as separate processes, isolated from other tests by a Redis namespace."""

    def __init__(
        self, workdir: Path, redis_url: str, namespace: str, registry: str, admin_key: str = "sk-test-admin-0123456789abcdef"
    ) -> None:
        self.workdir = workdir
        self.admin_key = admin_key
        self.models_file = workdir / "models.toml"
        self.models_file.write_text(registry)
        self.env = {
            **os.environ,
            "REDIS_URL": redis_url,
            "CHATBOT_REDIS_NAMESPACE": namespace,
            "CHATBOT_ADMIN_KEY": admin_key,
            "CHATBOT_INTERNAL_SECRET": INTERNAL_SECRET,
            "CHATBOT_MODELS_FILE": str(self.models_file),
            "CHATBOT_LOG_LEVEL": "INFO",
            "CHATBOT_HEARTBEAT_S": "0.5",
            "CHATBOT_CONVERSATION_URL": f"http://127.0.0.1:{free_port()}",
            "CHATBOT_DATABASE_URL": f"sqlite:///{workdir}/conversations.db",
            "CHATBOT_ATTACHMENTS_DIR": str(workdir / "attachments"),
            "CHATBOT_LOG_COLLECTOR_URL": f"http://127.0.0.1:{free_port()}",
            "CHATBOT_LOG_DATABASE_URL": f"sqlite:///{workdir}/usage.db",
        }
        self.processes: list[ServiceProcess] = []

    def _start(self, name: str, service: str, extra: dict[str, str]) -> ServiceProcess:
        process = ServiceProcess(name, service, {**self.env, **extra}, log_path=self.workdir / f"{name}.log").start()
        self.processes.append(process)
        return process

    def start_gateway(self, name: str = "gateway") -> str:
        """Start a gateway and return its base URL once it answers."""
        port = free_port()
        process = self._start(name, "gateway", {"CHATBOT_GATEWAY_PORT": str(port), "CHATBOT_GATEWAY_METRICS_PORT": str(free_port())})
        url = f"http://127.0.0.1:{port}"
        process.wait_http(f"{url}/healthz")
        return url

    def start_conversation(self, name: str = "conversation", **extra: str) -> str:
        """Start the conversation service (SQLite in the work dir unless told otherwise); gateways started later use it."""
        port = free_port()
        env = {"CHATBOT_CONVERSATION_PORT": str(port), "CHATBOT_CONVERSATION_METRICS_PORT": str(free_port()), **extra}
        process = self._start(name, "conversation", env)
        url = f"http://127.0.0.1:{port}"
        process.wait_http(f"{url}/readyz")
        self.env["CHATBOT_CONVERSATION_URL"] = url
        return url

    def start_ingest(self, name: str = "ingest", **extra: str) -> ServiceProcess:
        """Start an ingestion worker (it shares the conversation service's database and attachment folder)."""
        return self._start(name, "ingest", {"CHATBOT_INGEST_METRICS_PORT": str(free_port()), **extra})

    def start_log_collector(self, name: str = "log-collector", **extra: str) -> str:
        """Start the log collector; gateways started later use it for the usage API."""
        port = free_port()
        metrics = str(free_port())
        process = self._start(
            name, "log-collector", {"CHATBOT_LOG_COLLECTOR_PORT": str(port), "CHATBOT_LOG_COLLECTOR_METRICS_PORT": metrics, **extra}
        )
        url = f"http://127.0.0.1:{port}"
        process.wait_http(f"{url}/readyz")
        self.env["CHATBOT_LOG_COLLECTOR_URL"] = url
        return url

    def start_worker(self, name: str = "worker", **extra: str) -> ServiceProcess:
        return self._start(name, "inference", {"CHATBOT_WORKER_NAME": name, "CHATBOT_METRICS_PORT": str(free_port()), **extra})

    def start_with_knowledge(self) -> str:
        """Start the platform as `make run` does (conversation service, ingestion worker, log collector, gateway, one
        inference worker) and return the gateway's URL once a worker is live."""
        self.start_conversation()
        self.start_ingest()
        self.start_log_collector()
        url = self.start_gateway()
        self.start_worker()
        self.wait_ready(url)
        return url

    def metrics_url(self, service: str) -> str:
        """Where the first process of `service` (gateway, conversation, log-collector, inference) serves its metrics."""
        process = next(p for p in self.processes if p.service == service)
        variable = {
            "gateway": "CHATBOT_GATEWAY_METRICS_PORT",
            "conversation": "CHATBOT_CONVERSATION_METRICS_PORT",
            "ingest": "CHATBOT_INGEST_METRICS_PORT",
            "log-collector": "CHATBOT_LOG_COLLECTOR_METRICS_PORT",
            "inference": "CHATBOT_METRICS_PORT",
        }[service]
        return f"http://127.0.0.1:{process.env[variable]}/metrics"

    def wait_ready(self, gateway_url: str, timeout_s: float = 30.0) -> None:
        """Wait until the gateway sees Redis and a live worker; fail at once if a process died."""
        gateway = next(p for p in self.processes if p.service == "gateway")
        others = [p for p in self.processes if p is not gateway]
        gateway.wait_http(f"{gateway_url}/readyz", timeout_s=timeout_s, also_alive=others)

    def stop(self) -> None:
        for process in self.processes:
            process.stop(grace_s=10.0)


def api_client(url: str, key: str) -> httpx.Client:
    """A client of a gateway at `url` that sends `key` as its bearer token."""
    return httpx.Client(base_url=url, headers={"Authorization": f"Bearer {key}"}, timeout=30)


def create_key(url: str, admin: str, **fields: Any) -> dict[str, Any]:
    """A new API key (`fields`: its owner, limits, models), made with the admin key; the response, its secret included."""
    response = api_client(url, admin).post("/api/v1/admin/keys", json=fields)
    assert response.status_code == 201, response.text
    created: dict[str, Any] = response.json()
    return created
