"""A real Redis Sentinel setup on this machine, no Docker: a master, its replica and three Sentinels watching them."""

from __future__ import annotations

import shutil
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import redis

from .redis_server import NoRedis, RedisServer, answers, free_port

MASTER_NAME = "mymaster"


class SentinelProcess:
    """One `redis-server --sentinel` with a configuration file of its own (Sentinels rewrite theirs)."""

    def __init__(self, data_dir: Path, master_port: int, down_after_ms: int) -> None:
        self.data_dir = data_dir.resolve()
        self.port = free_port()
        self.master_port = master_port
        self.down_after_ms = down_after_ms
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, timeout_s: float = 10.0) -> SentinelProcess:
        binary = shutil.which("redis-server")
        if binary is None:
            raise NoRedis("redis-server is not on PATH")
        self.data_dir.mkdir(parents=True, exist_ok=True)
        config = self.data_dir / "sentinel.conf"
        config.write_text(
            f"port {self.port}\nbind 127.0.0.1\ndir {self.data_dir}\nlogfile {self.data_dir / 'sentinel.log'}\n"
            f"sentinel monitor {MASTER_NAME} 127.0.0.1 {self.master_port} 2\n"
            f"sentinel down-after-milliseconds {MASTER_NAME} {self.down_after_ms}\n"
            f"sentinel failover-timeout {MASTER_NAME} 10000\n"
        )
        self.process = subprocess.Popen([binary, str(config), "--sentinel"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + timeout_s
        while not answers(f"redis://127.0.0.1:{self.port}", 0.2):
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise NoRedis(f"a Sentinel did not start on port {self.port}; see {self.data_dir / 'sentinel.log'}")
            time.sleep(0.05)
        return self

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=5)


class SentinelSetup:
    """A master and a replica, watched by three Sentinels (a quorum of two) that fail over after `down_after_ms`."""

    def __init__(self, data_dir: Path, down_after_ms: int = 1000) -> None:
        self.master = RedisServer(data_dir / "master")
        self.replica = RedisServer(data_dir / "replica", extra=["--replicaof", "127.0.0.1", str(self.master.port)])
        self.sentinels = [SentinelProcess(data_dir / f"sentinel{i}", self.master.port, down_after_ms) for i in range(3)]

    @property
    def addresses(self) -> str:
        """`CHATBOT_REDIS_SENTINELS` for this setup."""
        return ",".join(f"127.0.0.1:{sentinel.port}" for sentinel in self.sentinels)

    def start(self, timeout_s: float = 20.0) -> SentinelSetup:
        try:
            self.master.start()
            self.replica.start()
            for sentinel in self.sentinels:
                sentinel.start()
            self.wait_for(lambda: self._replica_in_sync() and self._sentinels_know_the_replica(), timeout_s, "the replica did not sync")
        except BaseException:
            self.stop()
            raise
        return self

    def master_port(self) -> int:
        """The master's port as the first Sentinel that answers names it."""
        for sentinel in self.sentinels:
            try:
                with redis.Redis(port=sentinel.port, socket_timeout=1) as client:
                    _, port = client.sentinel_get_master_addr_by_name(MASTER_NAME)
                    return int(port)
            except (redis.RedisError, OSError, TypeError):
                continue
        raise NoRedis("no Sentinel answers")

    def wait_for(self, condition: Callable[[], bool], timeout_s: float, what: str) -> None:
        deadline = time.monotonic() + timeout_s
        while not condition():
            if time.monotonic() > deadline:
                raise NoRedis(f"{what} within {timeout_s} s")
            time.sleep(0.1)

    def _replica_in_sync(self) -> bool:
        with redis.Redis(port=self.replica.port, socket_timeout=1) as client:
            return bool(client.info("replication").get("master_link_status") == "up")

    def _sentinels_know_the_replica(self) -> bool:
        for sentinel in self.sentinels:
            with redis.Redis(port=sentinel.port, socket_timeout=1) as client:
                if not client.sentinel_slaves(MASTER_NAME):
                    return False
        return True

    def stop(self) -> None:
        for sentinel in self.sentinels:
            sentinel.stop()
        self.replica.stop()
        self.master.stop()
