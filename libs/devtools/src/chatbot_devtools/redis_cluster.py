"""A real Redis Cluster on this machine, no Docker: six `redis-server --cluster-enabled yes` processes (three masters,
each with a replica), joined by `redis-cli --cluster create`."""

from __future__ import annotations

import shutil
import subprocess
import time
from pathlib import Path
from typing import cast

import redis
from redis.cluster import RedisCluster
from redis.crc import key_slot

from chatbot_contracts.redis import RedisSettings

from .redis_server import NoRedis, RedisServer, free_port

CLUSTER_BUS_OFFSET = 10_000
"""A cluster node talks to the others on its port + 10000."""


def sync_client(url: str) -> redis.Redis:
    """A blocking client of the Redis at `url` for tests: a cluster's client when it is a node of a Redis Cluster (typed
    as the plain client: it takes the same commands)."""
    if RedisSettings(url=url).cluster():
        return cast(redis.Redis, RedisCluster.from_url(url))
    return redis.Redis.from_url(url)


class RedisClusterNodes:
    """Six cluster-enabled servers; masters fail over to their replica after `node_timeout_ms` of silence."""

    def __init__(self, data_dir: Path, *, nodes: int = 6, replicas: int = 1, node_timeout_ms: int = 2000) -> None:
        self.data_dir = data_dir.resolve()
        self.replicas = replicas
        self.node_timeout_ms = node_timeout_ms
        self.servers = [
            RedisServer(
                self.data_dir / f"node{i}",
                free_port(bus_offset=CLUSTER_BUS_OFFSET),
                extra=[
                    *("--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf"),
                    *("--cluster-node-timeout", str(node_timeout_ms)),
                    # A replica starts copying its master at once, and may be promoted however long it was cut off.
                    *("--repl-diskless-sync-delay", "0", "--cluster-replica-validity-factor", "0"),
                ],
            )
            for i in range(nodes)
        ]

    @property
    def url(self) -> str:
        """Any one node's address, as `REDIS_URL` names a cluster (no database number: a cluster has only 0)."""
        return f"redis://127.0.0.1:{self.servers[0].port}"

    def start(self, timeout_s: float = 30.0) -> RedisClusterNodes:
        cli = shutil.which("redis-cli")
        if cli is None:
            raise NoRedis("redis-cli is not on PATH")
        try:
            for server in self.servers:
                server.start()
            addresses = [f"127.0.0.1:{server.port}" for server in self.servers]
            subprocess.run(
                [cli, "--cluster", "create", *addresses, "--cluster-replicas", str(self.replicas), "--cluster-yes"],
                check=True,
                capture_output=True,
                timeout=timeout_s,
            )
            self.wait_healthy(timeout_s)
            self.wait_replicated(timeout_s)
        except BaseException:
            self.stop()
            raise
        return self

    def client(self) -> RedisCluster:
        return RedisCluster.from_url(self.url, socket_connect_timeout=0.5, socket_timeout=2)

    def wait_healthy(self, timeout_s: float = 30.0) -> None:
        """Until every living node says the cluster is ok and every slot has a master that answers."""
        deadline = time.monotonic() + timeout_s
        while True:
            if self._healthy():
                return
            if time.monotonic() > deadline:
                raise NoRedis(f"the Redis Cluster in {self.data_dir} did not become healthy within {timeout_s} s")
            time.sleep(0.1)

    def wait_replicated(self, timeout_s: float = 30.0) -> None:
        """Until every living replica has copied its master and follows it (only then can it take over)."""
        deadline = time.monotonic() + timeout_s
        while True:
            states = []
            for server in self.servers:
                if server.running:
                    with redis.Redis(port=server.port, socket_timeout=1) as node:
                        states.append(node.info("replication"))
            if all(state["role"] == "master" or state.get("master_link_status") == "up" for state in states):
                return
            if time.monotonic() > deadline:
                raise NoRedis(f"the replicas of the Redis Cluster in {self.data_dir} did not sync within {timeout_s} s")
            time.sleep(0.1)

    def _healthy(self) -> bool:
        """Every living node says the cluster is ok, and names living masters for all 16384 slots."""
        living = {server.port for server in self.servers if server.running}
        for port in living:
            try:
                with redis.Redis(port=port, socket_timeout=1) as node:
                    info = node.cluster("info")
                    ranges = node.execute_command("CLUSTER", "SLOTS")
            except (redis.RedisError, OSError):
                return False
            if info.get("cluster_state") != "ok":
                return False
            served = sum(int(end) - int(start) + 1 for start, end, master, *_ in ranges if int(master[1]) in living)
            if served != 16384:
                return False
        return True

    def master_of(self, key: str) -> RedisServer:
        """The server that holds `key`'s slot as master now."""
        with self.client() as cluster:
            node = cluster.get_node_from_key(key)
            return next(server for server in self.servers if server.port == node.port)

    def masters(self) -> list[RedisServer]:
        with self.client() as cluster:
            ports = {node.port for node in cluster.get_primaries()}
        return [server for server in self.servers if server.port in ports]

    def move_slot(self, key: str, to: RedisServer, batch: int = 100) -> int:
        """Move `key`'s slot and every key in it to master `to` while clients go on using them, as `redis-cli --cluster
        reshard` does: mark it importing and migrating, MIGRATE its keys in batches, then give it to `to` on every
        master. Returns how many keys moved."""
        slot = key_slot(key.encode())
        source_port = self.master_of(key).port
        with redis.Redis(port=source_port, socket_timeout=10) as source, redis.Redis(port=to.port, socket_timeout=10) as target:
            source_id, target_id = source.execute_command("CLUSTER", "MYID"), target.execute_command("CLUSTER", "MYID")
            target.execute_command("CLUSTER", "SETSLOT", slot, "IMPORTING", source_id)
            source.execute_command("CLUSTER", "SETSLOT", slot, "MIGRATING", target_id)
            moved = 0
            while keys := source.execute_command("CLUSTER", "GETKEYSINSLOT", slot, batch):
                source.execute_command("MIGRATE", "127.0.0.1", to.port, "", 0, 10_000, "KEYS", *keys)
                moved += len(keys)
        for server in sorted(self.masters(), key=lambda master: master.port != to.port):  # the target first
            with redis.Redis(port=server.port, socket_timeout=10) as master:
                master.execute_command("CLUSTER", "SETSLOT", slot, "NODE", target_id)
        return moved

    def stop(self) -> None:
        for server in self.servers:
            server.stop()
