"""`make test`: run pytest against a real Redis, then the cluster suite against a real Redis Cluster.

`REDIS_URL` if it is set and answers; otherwise a `redis-server` started for the run; otherwise a
testcontainers Redis when Docker runs; otherwise a clear failure (never a silent skip).

Then (a whole run, or `CHATBOT_TEST_CLUSTER=1`) six `redis-server` processes of its own make a
Redis Cluster, and the end-to-end tests (`CLUSTER_SUITE`) run again with every service on it.

SIGTERM or SIGHUP (a CI runner's timeout, a closed terminal) stops the run and leaves nothing behind: pytest gets it
and tears its fixtures down (the plugin's `pytest_configure`), then the Redis and the cluster started here stop.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path
from types import FrameType

from .processes import STOP_SIGNALS
from .redis_cluster import RedisClusterNodes
from .redis_server import NoRedis, ensure_redis

CLUSTER_SUITE = ["tests/e2e", "tests/faults/test_workers_and_gateways_die.py"]
"""What runs again on a Redis Cluster (`tests/cluster` starts clusters of its own in the first run)."""


def pytest(args: list[str], redis_url: str) -> int:
    """pytest's exit code, run in a child process. A stop signal for this process is passed on to it once (it then tears
    its fixtures down), and this process waits for it: it holds the Redis those fixtures still use. Ctrl-C reaches
    pytest from the terminal directly, so it is not passed on a second time."""
    child = subprocess.Popen([sys.executable, "-m", "pytest", *args], env={**os.environ, "REDIS_URL": redis_url})
    passed_on = False

    def pass_on(signum: int, _: FrameType | None) -> None:
        nonlocal passed_on
        if not passed_on:
            passed_on = True
            child.send_signal(signum)

    previous = {sig: signal.signal(sig, pass_on) for sig in STOP_SIGNALS}
    previous[signal.SIGINT] = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        return child.wait()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def stop(signum: int, _: FrameType | None) -> None:
    """Outside pytest's run: leave through the `finally`s that stop the servers started here."""
    raise SystemExit(128 + signum)


def main() -> None:
    args = sys.argv[1:]
    for sig in STOP_SIGNALS:
        signal.signal(sig, stop)
    try:
        with ensure_redis(os.environ.get("REDIS_URL"), Path(".data") / "test-redis", allow_docker=True) as url:
            print(f"make test: Redis at {url}", flush=True)
            code = pytest(args, url)
        if code == 0 and (not args or os.environ.get("CHATBOT_TEST_CLUSTER") == "1"):
            cluster = RedisClusterNodes(Path(".data") / "test-cluster").start()
            try:
                print(f"make test: the cluster suite, on a Redis Cluster at {cluster.url}", flush=True)
                suite = args or CLUSTER_SUITE
                code = pytest(suite, cluster.url)
            finally:
                cluster.stop()
    except NoRedis as exc:
        print(f"make test: {exc}", file=sys.stderr)
        code = 2
    sys.exit(code)


if __name__ == "__main__":
    main()
