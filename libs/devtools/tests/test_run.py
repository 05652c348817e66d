"""How many inference workers `make run` starts."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from chatbot_devtools.run import inference_workers


@pytest.mark.parametrize(("cores", "workers"), [(1, 1), (2, 1), (3, 1), (4, 2), (64, 2)])
def test_one_worker_for_every_two_cores_one_to_two(cores: int, workers: int) -> None:
    assert inference_workers({}, cores=cores) == workers


@pytest.mark.skipif(not hasattr(os, "sched_setaffinity"), reason="no CPU affinity on this system")
def test_the_cores_counted_are_those_the_process_may_run_on() -> None:
    """A process held to one core (`taskset`, a container's cpuset) counts one core and starts one worker, however
    many the machine has."""
    pinned = (
        "import os; os.sched_setaffinity(0, {min(os.sched_getaffinity(0))}); "
        "from chatbot_devtools.run import inference_workers, usable_cores; print(usable_cores(), inference_workers({}))"
    )
    env = {k: v for k, v in os.environ.items() if k != "CHATBOT_INFERENCE_WORKERS"}
    answer = subprocess.run([sys.executable, "-c", pinned], capture_output=True, text=True, check=True, env=env)
    assert answer.stdout.split() == ["1", "1"]


def test_the_variable_wins_over_the_cores() -> None:
    assert inference_workers({"CHATBOT_INFERENCE_WORKERS": "3"}, cores=2) == 3
    assert inference_workers({"CHATBOT_INFERENCE_WORKERS": "1"}, cores=64) == 1


@pytest.mark.parametrize("value", ["0", "-1", "two", "", "65", "1.5", "\u00b2"])
def test_a_bad_count_is_refused_naming_the_variable(value: str) -> None:
    with pytest.raises(SystemExit) as refused:
        inference_workers({"CHATBOT_INFERENCE_WORKERS": value}, cores=2)
    assert "CHATBOT_INFERENCE_WORKERS" in str(refused.value)
    assert repr(value) in str(refused.value)
