"""A Redis to run against: the one at `REDIS_URL` if it answers, else a `redis-server` started here."""

from __future__ import annotations

import contextlib
import random
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import redis

HOW_TO_GET_REDIS = """\
No Redis could be found or started:
  - REDIS_URL={url} does not answer, and
  - there is no `redis-server` on PATH{docker}.
Get one of these and try again:
  - Debian/Ubuntu: sudo apt-get install redis-server
  - macOS:         brew install redis
  - Docker:        docker run -d -p 6379:6379 redis:7   (then REDIS_URL=redis://127.0.0.1:6379/0)
"""


class NoRedis(RuntimeError):
    """No Redis answers and none can be started here."""


def answers(url: str, timeout_s: float = 0.5) -> bool:
    """Whether a Redis server answers PING at `url`."""
    try:
        client = redis.Redis.from_url(url, socket_connect_timeout=timeout_s, socket_timeout=timeout_s)
        try:
            return bool(client.ping())
        finally:
            client.close()
    except (redis.RedisError, OSError):
        return False


EPHEMERAL_PORTS = Path("/proc/sys/net/ipv4/ip_local_port_range")
_handed_out: set[int] = set()


def _bindable(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def free_port(bus_offset: int = 0) -> int:
    """A port nothing listens on, for a process about to be started. Chosen below the kernel's ephemeral range: a
    port from that range (what binding to port 0 gives) can be handed to some outgoing connection before the process
    meant for it binds it, which a test run once met ("address already in use"). With `bus_offset`, the port that far
    above it is free and below that range too (a cluster node's bus port, its port + 10000)."""
    try:
        low = int(EPHEMERAL_PORTS.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        low = 32768
    rng = random.SystemRandom()
    for _ in range(200):
        port = rng.randint(max(1024, low - 16000), low - 1 - bus_offset)
        if port in _handed_out or not _bindable(port) or (bus_offset and not _bindable(port + bus_offset)):
            continue
        _handed_out.add(port)
        return port
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


MAX_SOCKET_PATH_BYTES = 100
"""A Unix socket's path longer than this does not fit the kernel's address (108 bytes on Linux, 104 on macOS)."""


class RedisServer:
    """A `redis-server` child process on a port of its own, keeping no data on disk by default.

    With `unix_socket`, it listens on `redis.sock` in its data folder too, and its `url` names that socket: a client
    on the same machine then skips TCP's work on both ends of every round trip (`bench/README.md`, Round 19). A
    folder whose path is too long for a socket's address keeps TCP alone.
    """

    def __init__(
        self, data_dir: Path, port: int | None = None, *, persist: bool = False, extra: list[str] | None = None, unix_socket: bool = False
    ) -> None:
        self.data_dir = data_dir.resolve()
        self.port = port or free_port()
        self.persist = persist
        self.extra = extra or []
        """More `redis-server` options (a cluster node's, say)."""
        socket_path = self.data_dir / "redis.sock"
        self.socket: Path | None = socket_path if unix_socket and len(bytes(socket_path)) <= MAX_SOCKET_PATH_BYTES else None
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        if self.socket is not None:
            return f"unix://{self.socket}?db=0"
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def start(self, timeout_s: float = 10.0) -> RedisServer:
        binary = shutil.which("redis-server")
        if binary is None:
            raise NoRedis("redis-server is not on PATH")
        self.data_dir.mkdir(parents=True, exist_ok=True)
        persistence = ["--appendonly", "yes", "--appendfsync", "everysec"] if self.persist else ["--appendonly", "no"]
        self.process = subprocess.Popen(
            [
                binary,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                *persistence,
                "--dir",
                str(self.data_dir),
                "--logfile",
                str(self.data_dir / "redis.log"),
                *(["--unixsocket", str(self.socket), "--unixsocketperm", "700"] if self.socket is not None else []),
                *self.extra,
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + timeout_s
        while not answers(self.url, 0.2):
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise NoRedis(f"redis-server did not start on port {self.port}; see {self.data_dir / 'redis.log'}")
            time.sleep(0.05)
        return self

    def kill(self) -> None:
        """Stop abruptly, as a crash would."""
        if self.process and self.process.poll() is None:
            self.process.kill()
            self.process.wait()

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


@contextlib.contextmanager
def _testcontainer() -> Iterator[str]:
    from testcontainers.redis import RedisContainer  # imported only when Docker is the last resort

    with RedisContainer("redis:7") as container:
        yield f"redis://{container.get_container_host_ip()}:{container.get_exposed_port(6379)}/0"


def _docker_available() -> bool:
    if shutil.which("docker") is None:
        return False
    return subprocess.run(["docker", "info"], capture_output=True, timeout=10).returncode == 0


@contextlib.contextmanager
def ensure_redis(
    url: str | None, data_dir: Path, *, allow_docker: bool = False, persist: bool = False, unix_socket: bool = False
) -> Iterator[str]:
    """Yield the URL of a Redis that answers: `url`, else one started here (reached by its Unix socket with
    `unix_socket`, see `RedisServer`), else (tests) a container."""
    if url and answers(url):
        yield url
        return
    if shutil.which("redis-server"):
        server = RedisServer(data_dir, persist=persist, unix_socket=unix_socket).start()
        try:
            yield server.url
        finally:
            server.stop()
        return
    if allow_docker and _docker_available():
        with _testcontainer() as container_url:
            yield container_url
        return
    raise NoRedis(HOW_TO_GET_REDIS.format(url=url or "(unset)", docker=" and Docker is not running" if allow_docker else ""))
