"""`make test`: run pytest against a real Redis, then the cluster suite against a real Redis Cluster.

`REDIS_URL` if it is set and answers; otherwise a `redis-server` started for the run; otherwise a
testcontainers Redis when Docker runs; otherwise a clear failure (never a silent skip).

Then (a whole run, or `CHATBOT_TEST_CLUSTER=1`) six `redis-server` processes of its own make a
Redis Cluster, and the end-to-end tests (`CLUSTER_SUITE`) run again with every service on it.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from .redis_cluster import RedisClusterNodes
from .redis_server import NoRedis, ensure_redis

CLUSTER_SUITE = ["tests/e2e", "tests/faults/test_workers_and_gateways_die.py"]
"""What runs again on a Redis Cluster (`tests/cluster` starts clusters of its own in the first run)."""


def main() -> None:
    args = sys.argv[1:]
    try:
        with ensure_redis(os.environ.get("REDIS_URL"), Path(".data") / "test-redis", allow_docker=True) as url:
            print(f"make test: Redis at {url}", flush=True)
            code = subprocess.call([sys.executable, "-m", "pytest", *args], env={**os.environ, "REDIS_URL": url})
        if code == 0 and (not args or os.environ.get("CHATBOT_TEST_CLUSTER") == "1"):
            cluster = RedisClusterNodes(Path(".data") / "test-cluster").start()
            try:
                print(f"make test: the cluster suite, on a Redis Cluster at {cluster.url}", flush=True)
                suite = args or CLUSTER_SUITE
                code = subprocess.call([sys.executable, "-m", "pytest", *suite], env={**os.environ, "REDIS_URL": cluster.url})
            finally:
                cluster.stop()
    except NoRedis as exc:
        print(f"make test: {exc}", file=sys.stderr)
        code = 2
    sys.exit(code)


if __name__ == "__main__":
    main()
