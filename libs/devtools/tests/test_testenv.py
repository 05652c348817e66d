"""`make test` stopped by SIGTERM (a CI runner's timeout) leaves no process behind: pytest's fixtures tear down, and
the Redis `make test` started stops."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from chatbot_devtools.redis_server import answers, free_port

HANGING_TEST = '''
import subprocess, time
from pathlib import Path

import pytest


@pytest.fixture
def own_session_child():
    """A child in a session of its own, as the platform's services run: a signal to the run's group misses it."""
    child = subprocess.Popen(["sleep", "600"], start_new_session=True)
    yield child
    child.terminate()
    child.wait()


def test_hangs(own_redis, own_session_child):
    Path("pids").write_text(f"{own_redis.process.pid} {own_session_child.pid}")
    time.sleep(600)
'''


def alive(pid: int) -> bool:
    """Whether `pid` runs (a zombie, dead but not yet reaped by its parent, does not)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (FileNotFoundError, IndexError):
        return False


def listening_on(port: int) -> list[int]:
    """The `redis-server`s on `port` (a running server's title names its address)."""
    found = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            title = cmdline.read_bytes()
        except OSError:  # a process that ended while the others were read
            continue
        if f"redis-server 127.0.0.1:{port}\0".encode() in title:
            found.append(int(cmdline.parent.name))
    return found


def wait_for(path: Path, run: subprocess.Popen[bytes], log: Path, timeout_s: float = 60.0) -> str:
    deadline = time.monotonic() + timeout_s
    while not path.exists() or not path.read_text():
        assert run.poll() is None, f"make test ended before the test started: {log.read_text()[-2000:]}"
        assert time.monotonic() < deadline, f"the test did not start within {timeout_s}s"
        time.sleep(0.1)
    return path.read_text()


@pytest.mark.skipif(not Path("/proc").is_dir(), reason="reads processes from /proc")
@pytest.mark.parametrize("to_the_group", [False, True], ids=["to-make-test-alone", "to-its-process-group"])
def test_sigterm_stops_the_run_and_everything_it_started(tmp_path: Path, to_the_group: bool) -> None:
    (tmp_path / "test_hanging.py").write_text(HANGING_TEST)
    log = tmp_path / "output"
    env = {**os.environ, "REDIS_URL": f"redis://127.0.0.1:{free_port()}/0", "PYTHONUNBUFFERED": "1"}
    with log.open("w") as output:
        run = subprocess.Popen(
            [sys.executable, "-m", "chatbot_devtools.testenv", "-p", "no:cacheprovider", "test_hanging.py"],
            cwd=tmp_path,
            env=env,
            stdout=output,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    leftovers: list[int] = []
    try:
        own_redis, own_session_child = (int(pid) for pid in wait_for(tmp_path / "pids", run, log).split())
        started_here = re.search(r"make test: Redis at redis://127.0.0.1:(\d+)/0", log.read_text())
        assert started_here, log.read_text()
        make_tests_redis = int(started_here.group(1))
        leftovers = [own_redis, own_session_child, *listening_on(make_tests_redis)]
        assert all(alive(pid) for pid in leftovers) and len(leftovers) == 3, leftovers
        if to_the_group:
            os.killpg(run.pid, signal.SIGTERM)
        else:
            run.send_signal(signal.SIGTERM)
        assert run.wait(timeout=60) != 0, log.read_text()
        assert not answers(f"redis://127.0.0.1:{make_tests_redis}/0"), "the Redis `make test` started stopped with it"
        assert not alive(own_redis), f"a test's own redis-server outlived the run:\n{log.read_text()[-2000:]}"
        assert not alive(own_session_child), f"a fixture's child in its own session outlived the run:\n{log.read_text()[-2000:]}"
        assert "the cluster suite" not in log.read_text(), "a stopped run does not go on to the cluster suite"
    finally:
        if run.poll() is None:
            os.killpg(run.pid, signal.SIGKILL)
            run.wait()
        for pid in leftovers:
            if alive(pid):
                os.kill(pid, signal.SIGKILL)
