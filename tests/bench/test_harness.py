"""The benchmark's own parts: the fake upstream as the OpenAI SDK sees it, and the load client's measurements."""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import math
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import httpx
import openai
import pytest

from chatbot_devtools.redis_server import free_port

BENCH = Path(__file__).resolve().parents[2] / "bench"


def _module(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"bench_{name}", BENCH / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look themselves up there
    spec.loader.exec_module(module)
    return module


loadclient = _module("loadclient")


def _upstream(tokens_per_s: float) -> Iterator[str]:
    port = free_port()
    process = subprocess.Popen([sys.executable, str(BENCH / "upstream.py"), "--port", str(port), "--tokens-per-s", str(tokens_per_s)])
    url = f"http://127.0.0.1:{port}/v1"
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                httpx.get(f"{url}/models", timeout=1)
                break
            except httpx.HTTPError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
        yield url
    finally:
        process.terminate()
        process.wait(10)


@pytest.fixture(scope="module")
def instant() -> Iterator[str]:
    yield from _upstream(0)


@pytest.fixture(scope="module")
def paced() -> Iterator[str]:
    yield from _upstream(50)


def test_the_official_sdk_reads_the_fake_upstream(instant: str) -> None:
    client = openai.OpenAI(base_url=instant, api_key="none", max_retries=0)
    assert [model.id for model in client.models.list()] == ["bench-model"]
    chunks = list(
        client.chat.completions.create(
            model="bench-model",
            messages=[{"role": "user", "content": "go"}],
            stream=True,
            max_tokens=7,
            stream_options={"include_usage": True},
        )
    )
    text = "".join(chunk.choices[0].delta.content or "" for chunk in chunks if chunk.choices)
    assert text == "tok " * 7
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == 7
    whole = client.chat.completions.create(model="bench-model", messages=[{"role": "user", "content": "go"}], max_tokens=3)
    assert whole.choices[0].message.content == "tok " * 3 and whole.usage is not None and whole.usage.total_tokens == 13


async def test_the_load_client_times_each_token_of_a_paced_stream(paced: str) -> None:
    client = loadclient.Client(paced)
    first = await client.stream("none", "bench-model", 5)
    second = await client.stream("none", "bench-model", 5)
    client.close()
    for sample in (first, second):
        assert sample.error is None and sample.tokens == 5 and sample.ttft is not None
        # 50 tokens/s: the four gaps after the first token are each at least most of 20 ms apart.
        assert len(sample.gaps) == 4 and min(sample.gaps) > 0.015, sample.gaps
        assert sample.total >= sum(sample.gaps)


async def test_the_load_client_reuses_its_connection_and_counts_what_went_wrong(instant: str) -> None:
    client = loadclient.Client(instant)
    samples, connections = [], []
    for _ in range(3):
        samples.append(await client.stream("none", "bench-model", 50))
        await asyncio.sleep(0.05)  # time for a close by the server to arrive
        connections += [c for c in client._idle if not c.closed]
    assert [(s.error, s.tokens, len(s.gaps)) for s in samples] == [(None, 50, 49)] * 3
    assert len(connections) == 3 and len(set(map(id, connections))) == 1  # one connection, kept alive by both ends
    client.close()
    refused = await loadclient.Client(f"http://127.0.0.1:{free_port()}/v1").stream("none", "bench-model", 5)
    assert refused.error == "ConnectionRefusedError"


async def test_the_load_client_sends_a_targets_own_headers() -> None:
    """Portkey is told where to send a request by headers; every request of a client carries them."""
    heads: list[bytes] = []

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        heads.append(await reader.readuntil(b"\r\n\r\n"))
        writer.write(b"HTTP/1.1 500 Internal Server Error\r\nContent-Length: 0\r\n\r\n")
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(answer, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    client = loadclient.Client(f"http://127.0.0.1:{port}/v1", {"x-portkey-provider": "openai", "x-portkey-custom-host": "http://up/v1"})
    sample = await client.stream("none", "bench-model", 5)
    server.close()
    assert sample.error == "HTTP 500"
    assert b"\r\nx-portkey-provider: openai\r\nx-portkey-custom-host: http://up/v1\r\n" in heads[0]
    assert heads[0].startswith(b"POST /v1/chat/completions HTTP/1.1\r\n")


def _verdicts(monkeypatch: pytest.MonkeyPatch, portkey_errors: int) -> dict[str, tuple[bool, str]]:
    """`gateways.py`'s verdicts on a run in which this platform did better than both peers, and Portkey failed
    `portkey_errors` of its requests (all of them when any: it then delivered nothing and answered no request in time)."""
    monkeypatch.syspath_prepend(str(BENCH))  # gateways.py imports the load client by its name, as a script does
    gateways = _module("gateways")
    failed = portkey_errors > 0
    names = ["upstream", "ours", "Portkey", "LiteLLM"]
    measured = {
        "upstream": {"requests_per_s": 3000.0, "errors": 0.0, "cpu_target_us": 300.0},
        "ours": {"requests_per_s": 900.0, "errors": 0.0, "cpu_target_us": 1500.0},
        "Portkey": {"requests_per_s": 0.0 if failed else 500.0, "errors": float(portkey_errors), "cpu_target_us": 1800.0},
        "LiteLLM": {"requests_per_s": 20.0, "errors": 0.0, "cpu_target_us": 90000.0},
    }
    ttft = {"upstream": 0.2, "ours": 3.0, "Portkey": math.nan if failed else 28.0, "LiteLLM": 15.0}

    def streams(gateway: float, errors: int) -> dict[str, object]:
        return {"cpu_per_token": {"gateway": gateway, "upstream": 20.0, "load client": 10.0}, "errors": errors}

    curve = {load: {"ours": streams(60.0, 0), "Portkey": streams(90.0, 100 if failed else 0)} for load in (100, 300, 1000)}
    many = {"errors": 0, "gap_p99": 30.0, "floor_gap_p99": 2.0, "kinds": []}
    args = argparse.Namespace(streams=1000, stream_seconds=60)
    found = gateways.verdicts(names, measured, ttft, curve, many, 200.0, args)
    return {name.split(".")[0]: (met, detail) for name, met, detail in found}


def test_the_benchmark_meets_targets_only_against_peers_that_did_the_work(monkeypatch: pytest.MonkeyPatch) -> None:
    clean = _verdicts(monkeypatch, portkey_errors=0)
    assert {target: met for target, (met, _) in clean.items()} == {"1": True, "2": True, "3": True, "4": True}
    assert "1.80× Portkey" in clean["1"][1] and "CPU a request 0.83× Portkey's" in clean["1"][1]
    # A Portkey that failed every request (say, a misconfigured route) makes any ratio to it meaningless, not a win.
    broken = _verdicts(monkeypatch, portkey_errors=5000)
    assert {target: met for target, (met, _) in broken.items()} == {"1": False, "2": False, "3": False, "4": True}
    assert "not measured: Portkey failed 5,000 requests" in broken["1"][1]
    assert "not measured: Portkey failed 100 streams at 100" in broken["2"][1]


@pytest.mark.skipif(not Path("/proc").is_dir(), reason="reads peak memory from /proc")
def test_a_targets_peak_memory_counts_every_one_of_its_processes(monkeypatch: pytest.MonkeyPatch) -> None:
    """A platform of five processes is not compared with Portkey's one by its largest process alone."""
    monkeypatch.syspath_prepend(str(BENCH))
    gateways = _module("gateways")
    child = subprocess.Popen([sys.executable, "-c", 'import time; data = b"x" * (64 << 20); time.sleep(30)'])
    try:
        deadline = time.monotonic() + 10
        while gateways.peak_rss_mb([child.pid]) < 64 and time.monotonic() < deadline:
            time.sleep(0.05)
        alone, child_alone = gateways.peak_rss_mb([os.getpid()]), gateways.peak_rss_mb([child.pid])
        assert child_alone >= 64
        assert gateways.peak_rss_mb([os.getpid(), child.pid]) >= alone + child_alone
    finally:
        child.kill()
        child.wait()
    assert math.isnan(gateways.peak_rss_mb([])), "no process: not measured, not 0 MB"
    assert math.isnan(gateways.peak_rss_mb([os.getpid(), child.pid])), "a process gone before it was read: not measured"
