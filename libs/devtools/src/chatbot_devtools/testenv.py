"""`make test`: run pytest against a real Redis.

`REDIS_URL` if it is set and answers; otherwise a `redis-server` started for the run; otherwise a
testcontainers Redis when Docker runs; otherwise a clear failure (never a silent skip).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from .redis_server import NoRedis, ensure_redis


def main() -> None:
    try:
        with ensure_redis(os.environ.get("REDIS_URL"), Path(".data") / "test-redis", allow_docker=True) as url:
            print(f"make test: Redis at {url}", flush=True)
            code = subprocess.call([sys.executable, "-m", "pytest", *sys.argv[1:]], env={**os.environ, "REDIS_URL": url})
    except NoRedis as exc:
        print(f"make test: {exc}", file=sys.stderr)
        code = 2
    sys.exit(code)


if __name__ == "__main__":
    main()
