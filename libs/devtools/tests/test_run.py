"""How many inference workers `make run` starts."""

from __future__ import annotations

import os

import pytest

from chatbot_devtools.run import inference_workers


@pytest.mark.parametrize(("cores", "workers"), [(1, 1), (2, 1), (3, 1), (4, 2), (64, 2)])
def test_one_worker_for_every_two_cores_one_to_two(cores: int, workers: int) -> None:
    assert inference_workers({}, cores=cores) == workers


def test_the_cores_this_process_may_use_are_counted_when_not_given() -> None:
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    assert inference_workers({}) == (1 if cores < 4 else 2)


def test_the_variable_wins_over_the_cores() -> None:
    assert inference_workers({"CHATBOT_INFERENCE_WORKERS": "3"}, cores=2) == 3
    assert inference_workers({"CHATBOT_INFERENCE_WORKERS": "1"}, cores=64) == 1


@pytest.mark.parametrize("value", ["0", "-1", "two", "", "65", "1.5", "\u00b2"])
def test_a_bad_count_is_refused_naming_the_variable(value: str) -> None:
    with pytest.raises(SystemExit) as refused:
        inference_workers({"CHATBOT_INFERENCE_WORKERS": value}, cores=2)
    assert "CHATBOT_INFERENCE_WORKERS" in str(refused.value)
    assert repr(value) in str(refused.value)
