"""The side-by-side gateway benchmark: this platform, LiteLLM's proxy and the bare upstream, on one machine, in one run.

Run with `make bench` (or `python bench/gateways.py`). Writes bench/results/latest.md and
bench/results/latest.png. Not a test: it measures and reports each target as met or not.

- The upstream is `bench/upstream.py` (instant, and paced at 20 tokens/s), one process each.
- This platform starts as `make run` starts it: a gateway, the conversation service, the log
  collector and the inference workers `make run` would start on this machine (one on two cores), on a
  Redis of its own.
- LiteLLM's proxy (`litellm[proxy]`, the version pinned below, in its own virtual environment
  under bench/.venv-litellm) runs one worker with a master key, pointed at the same upstream.
- The load client is this process (`loadclient.py`: asyncio protocols and httptools, cheap per
  token, as it shares the cores with the targets). Loads alternate between the targets, so that
  machine noise hits all alike.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import os
import resource
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import uvloop
from loadclient import Client, Sample
from redis import Redis

from chatbot_devtools.platform import LocalPlatform, registry_toml
from chatbot_devtools.redis_cluster import RedisClusterNodes
from chatbot_devtools.redis_server import RedisServer, free_port
from chatbot_devtools.run import inference_workers

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"
LITELLM = "litellm[proxy]==1.108.7"
LITELLM_CONSTRAINTS = ROOT / "bench" / "litellm-constraints.txt"
LITELLM_VENV = ROOT / "bench" / ".venv-litellm"
PORTKEY_PACKAGE = ROOT / "bench" / "portkey-package.json"
PORTKEY_DIR = ROOT / "bench" / ".portkey"
PORTKEY_FIX = ("this.updateHeaders(i,n.cacheStatus,o)", "i=this.updateHeaders(new Response(i.body,i),n.cacheStatus,o)")
"""The one line changed in Portkey 1.15.2's build: `ResponseService.create` hands `updateHeaders` a copy of the response
(same status, headers and body stream) whose headers can be changed, and keeps that copy."""
CURVE = (100, 300, 1000)
"""The paced-stream loads of the cost curve."""
TOKENS = 50


@dataclass
class Target:
    name: str
    base_url: str
    model: str
    key: str
    pids: list[int] = field(default_factory=list)
    """Every process of the target (this platform's Redis and other services included): their CPU a request and the
    sum of their peak memories are reported."""
    headers: dict[str, str] = field(default_factory=dict)
    """Headers every request carries (Portkey's routing headers)."""


async def throughput(target: Target, concurrency: int, seconds: float) -> list[Sample]:
    """`concurrency` clients, each sending one request after the other for `seconds`."""
    samples: list[Sample] = []
    deadline = time.perf_counter() + seconds
    client = Client(target.base_url, target.headers)

    async def loop() -> None:
        while time.perf_counter() < deadline:
            samples.append(await client.stream(target.key, target.model, TOKENS))

    await asyncio.gather(*(loop() for _ in range(concurrency)))
    client.close()
    return samples


async def sequential(target: Target, count: int) -> list[Sample]:
    client = Client(target.base_url, target.headers)
    await client.stream(target.key, target.model, TOKENS)  # connection warm
    samples = [await client.stream(target.key, target.model, TOKENS) for _ in range(count)]
    client.close()
    return samples


async def many_streams(target: Target, streams: int, tokens: int, model: str) -> list[Sample]:
    """`streams` paced streams at once (started over a second, as clients would arrive)."""
    client = Client(target.base_url, target.headers)

    async def one(i: int) -> Sample:
        await asyncio.sleep(i / streams)
        return await client.stream(target.key, model, tokens)

    samples = list(await asyncio.gather(*(one(i) for i in range(streams))))
    client.close()
    return samples


def quantile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def peak_rss_mb(pids: list[int]) -> float:
    """The sum of each process's peak resident memory (NaN for none, or for one gone)."""
    total = float("nan") if not pids else 0.0
    for pid in pids:
        try:
            total += next(
                int(line.split()[1]) / 1024 for line in Path(f"/proc/{pid}/status").read_text().splitlines() if line.startswith("VmHWM:")
            )
        except (OSError, StopIteration):
            return float("nan")
    return total


def cpu_seconds(pids: list[int]) -> float:
    total = 0.0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return total


def redis_calls(url: str) -> Counter[str]:
    """How many times each command has run on the Redis at `url` (its `INFO commandstats`)."""
    client = Redis.from_url(url)
    try:
        stats: dict[str, dict[str, Any]] = client.info("commandstats")
    finally:
        client.close()
    return Counter({name.removeprefix("cmdstat_"): int(fields["calls"]) for name, fields in stats.items()})


def own_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def target_and_harness(target: list[int], harness: list[int]) -> dict[str, float]:
    """CPU seconds so far of a target's processes, and of the harness's (`harness`, and the load client: this process)."""
    return {"target": cpu_seconds(target), "harness": cpu_seconds(harness) + own_cpu_seconds()}


def wait_idle(pids: list[int], busy: float = 0.1, within_s: float = 30.0) -> float:
    """Wait until `pids` together use less than `busy` of a core over half a second (at most `within_s`); the seconds waited."""
    started = time.monotonic()
    while time.monotonic() - started < within_s:
        before = cpu_seconds(pids)
        time.sleep(0.5)
        if cpu_seconds(pids) - before < busy * 0.5:
            break
    return time.monotonic() - started


def children(pid: int) -> list[int]:
    """A process and its descendants (LiteLLM's CLI starts the server as a child)."""
    found = [pid]
    for task in Path("/proc").glob("[0-9]*"):
        try:
            if int((task / "stat").read_text().split(") ")[1].split()[1]) in found:
                found.append(int(task.name))
        except (OSError, IndexError, ValueError):
            continue
    return found


def start_upstream(tokens_per_s: float, workdir: Path) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    log = (workdir / f"upstream-{tokens_per_s:g}.log").open("wb")
    process = subprocess.Popen(
        [sys.executable, str(ROOT / "bench" / "upstream.py"), "--port", str(port), "--tokens-per-s", str(tokens_per_s)],
        stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}/v1"
    _wait(f"{url}/models")
    return process, url


def _wait(url: str, timeout_s: float = 120.0, headers: dict[str, str] | None = None) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            if httpx.get(url, headers=headers, timeout=2).status_code < 500:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"{url} did not answer within {timeout_s:g}s")


def install_litellm() -> Path:
    """LiteLLM's proxy in its own virtual environment (made once; pip's cache makes later runs quick)."""
    binary = LITELLM_VENV / "bin" / "litellm"
    stamp = LITELLM_VENV / ".installed"
    if not binary.exists() or not stamp.exists() or stamp.read_text() != LITELLM:
        print(f"bench: installing {LITELLM} into {LITELLM_VENV.relative_to(ROOT)} (once)", flush=True)
        subprocess.run([sys.executable, "-m", "venv", str(LITELLM_VENV)], check=True)
        pip = [str(LITELLM_VENV / "bin" / "pip"), "install", "--quiet", "--disable-pip-version-check"]
        subprocess.run([*pip, "--constraint", str(LITELLM_CONSTRAINTS), LITELLM], check=True)
        stamp.write_text(LITELLM)
    return binary


def start_litellm(binary: Path, instant: str, paced: str, workdir: Path) -> tuple[subprocess.Popen[bytes], Target]:
    config = workdir / "litellm.yaml"
    config.write_text(
        "model_list:\n"
        f"  - model_name: bench\n    litellm_params: {{model: openai/bench-model, api_base: '{instant}', api_key: none}}\n"
        f"  - model_name: bench-paced\n    litellm_params: {{model: openai/bench-model, api_base: '{paced}', api_key: none}}\n"
        "general_settings:\n  master_key: sk-bench-litellm\n"
    )
    port = free_port()
    env = {**os.environ, "LITELLM_LOG": "ERROR", "LITELLM_MODE": "PRODUCTION", "DISABLE_SCHEMA_UPDATE": "true"}
    log = (workdir / "litellm.log").open("wb")
    process = subprocess.Popen(
        [str(binary), "--config", str(config), "--host", "127.0.0.1", "--port", str(port), "--num_workers", "1"],
        stdout=log, stderr=subprocess.STDOUT, env=env,
    )  # fmt: skip
    target = Target("LiteLLM proxy", f"http://127.0.0.1:{port}/v1", "bench", "sk-bench-litellm")
    _wait(f"http://127.0.0.1:{port}/health/liveliness", timeout_s=180)
    target.pids = children(process.pid)
    return process, target


def install_portkey() -> Path:
    """Portkey's open-source gateway from npm, at the version `portkey-package.json` pins, in bench/.portkey (once).

    On current Node.js, 1.15.2 fails every response with `TypeError: immutable`: it appends its own headers to the
    upstream's response, whose headers fetch made immutable (its issue #1389). As its pull request #1390 does, the
    benchmark's copy gives `updateHeaders` a response whose headers it may change (`PORTKEY_FIX`)."""
    entry = PORTKEY_DIR / "node_modules" / "@portkey-ai" / "gateway" / "build" / "start-server.js"
    stamp = PORTKEY_DIR / ".installed"
    manifest = PORTKEY_PACKAGE.read_text()
    if not entry.exists() or not stamp.exists() or stamp.read_text() != manifest:
        print(f"bench: installing Portkey's gateway into {PORTKEY_DIR.relative_to(ROOT)} (once)", flush=True)
        PORTKEY_DIR.mkdir(exist_ok=True)
        (PORTKEY_DIR / "package.json").write_text(manifest)
        npm = ["npm", "install", "--no-audit", "--no-fund", "--omit=dev", "--no-package-lock", "--loglevel=error"]
        subprocess.run(npm, cwd=PORTKEY_DIR, check=True)
        built = entry.read_text()
        broken, fixed = PORTKEY_FIX
        if built.count(broken) != 1:
            raise SystemExit(f"bench: {entry} is not the build the fix was written for (expected one {broken!r})")
        entry.write_text(built.replace(broken, fixed))
        stamp.write_text(manifest)
    return entry


def start_portkey(entry: Path, instant: str, paced: str, workdir: Path) -> tuple[subprocess.Popen[bytes], Target, Target]:
    """Portkey on a free port (one Node.js process, headless); a target through it to each upstream."""
    port = free_port()
    log = (workdir / "portkey.log").open("wb")
    process = subprocess.Popen(["node", str(entry), f"--port={port}", "--headless"], stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/v1"
    _wait(f"http://127.0.0.1:{port}/", timeout_s=60)
    targets = [
        Target(name, url, "bench-model", "none", [process.pid], {"x-portkey-provider": "openai", "x-portkey-custom-host": upstream})
        for name, upstream in (("Portkey gateway", instant), ("Portkey gateway (paced)", paced))
    ]
    return process, targets[0], targets[1]


def start_platform(instant: str, paced: str, workdir: Path, redis_url: str) -> tuple[LocalPlatform, Target]:
    spec = {"provider": "openai", "upstream_model": "bench-model", "context_window": 8192, "max_output_tokens": 4096}
    registry = registry_toml({"bench": {**spec, "base_url": instant}, "bench-paced": {**spec, "base_url": paced}})
    platform = LocalPlatform(workdir, redis_url, "", registry, admin_key="sk-bench-admin-0123456789abcdef")
    workers = inference_workers(os.environ)
    # Slots for the 1,000 paced streams at once, shared by the workers.
    slots = str(-(-1024 // workers))
    platform.env.update({"CHATBOT_HEARTBEAT_S": "2.0", "CHATBOT_LOG_LEVEL": "WARNING", "CHATBOT_WORKER_CONCURRENCY": slots})
    # The whole load comes with one key: its fair share (64 running, 256 streams by default) would cap the
    # benchmark at one tenant's share. The bounds are still checked and counted, only without a ceiling.
    platform.env.update({"CHATBOT_MAX_INFLIGHT_PER_KEY": "0", "CHATBOT_MAX_STREAMS_PER_KEY": "0"})
    platform.start_conversation()
    platform.start_log_collector()
    url = platform.start_gateway()
    for i in range(1, workers + 1):
        platform.start_worker(f"worker-{i}")
    platform.wait_ready(url)
    target = Target("Chatbot-LLM", f"{url}/v1", "bench", platform.admin_key)
    return platform, target


def summarize(samples: list[Sample], seconds: float) -> dict[str, float]:
    good = [s for s in samples if s.error is None]
    ttfts = [s.ttft for s in good if s.ttft is not None]
    return {
        "requests_per_s": len(good) / seconds,
        "tokens_per_s": sum(s.tokens for s in good) / seconds,
        "ttft_p50_ms": quantile(ttfts, 0.5) * 1000,
        "ttft_p99_ms": quantile(ttfts, 0.99) * 1000,
        "gap_p99_ms": quantile([g for s in good for g in s.gaps], 0.99) * 1000,
        "errors": float(len(samples) - len(good)),
    }


def streams_through(
    target: Target, model: str, streams: int, seconds: int, parts: dict[str, list[int]], paced: str, redis: RedisServer | None
) -> dict[str, Any]:
    """`streams` paced streams through `target` for `seconds` (and, for the client's own noise, through the upstream alone
    for a third as long: it only measures the harness): errors, the added inter-token gap p99, and the CPU per
    delivered token of each of `parts` (named processes), the load client's, and Redis's commands per token."""
    tokens = 20 * seconds
    wait_idle(children(os.getpid())[1:])
    floor_streams = uvloop.run(
        many_streams(Target("paced upstream", paced, "bench-model", "none"), streams, max(20, tokens // 3), "bench-model")
    )
    calls_before = redis_calls(redis.url) if redis else Counter()
    cpu_before = {name: cpu_seconds(pids) for name, pids in parts.items()} | {"load client": own_cpu_seconds()}
    samples = uvloop.run(many_streams(target, streams, tokens, model))
    delivered = max(1, sum(s.tokens for s in samples))
    cpu_after = {name: cpu_seconds(pids) for name, pids in parts.items()} | {"load client": own_cpu_seconds()}
    calls = (redis_calls(redis.url) if redis else Counter()) - calls_before
    nominal = 1000 / 20
    return {
        "streams": streams,
        "floor_gap_p99": quantile([g for s in floor_streams if not s.error for g in s.gaps if g > 0], 0.99) * 1000 - nominal,
        "gap_p99": quantile([g for s in samples if not s.error for g in s.gaps if g > 0], 0.99) * 1000 - nominal,
        "gap_p50": quantile([g for s in samples if not s.error for g in s.gaps if g > 0], 0.5) * 1000,
        "errors": sum(1 for s in samples if s.error),
        "floor_errors": sum(1 for s in floor_streams if s.error),
        "kinds": Counter(str(s.error).split(":")[0] for s in samples if s.error).most_common(3),
        "cpu_per_token": {name: (cpu_after[name] - cpu_before[name]) / delivered * 1e6 for name in cpu_before},
        "calls_per_token": {name: count / delivered for name, count in calls.most_common() if count >= delivered / 1000},
    }


def platform_parts(platform: LocalPlatform, redis: list[RedisServer], paced_process: subprocess.Popen[bytes]) -> dict[str, list[int]]:
    return {
        "gateway": [p.pid for p in platform.processes if p.service == "gateway"],
        "workers": [p.pid for p in platform.processes if p.service == "inference"],
        "Redis": [server.process.pid for server in redis if server.process],
        "other services": [p.pid for p in platform.processes if p.service not in ("gateway", "inference")],
        "upstream": [paced_process.pid],
    }


HARNESS = ("upstream", "load client")


def own_cost(many: dict[str, Any]) -> float:
    """The target's CPU per delivered token: every process of it, the harness (upstream, load client) left out."""
    cpu: dict[str, float] = many["cpu_per_token"]
    return sum(v for k, v in cpu.items() if k not in HARNESS)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=8.0, help="length of one throughput round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--latency-requests", type=int, default=200)
    parser.add_argument("--streams", type=int, default=1000)
    parser.add_argument("--stream-seconds", type=int, default=60, help="length of target 4's 1,000 paced streams")
    parser.add_argument("--curve-seconds", type=int, default=20, help="length of each load of the cost curve")
    parser.add_argument(
        "--streams-only", action="store_true", help="only target 4 through this platform (a probe: no peers, nothing written)"
    )
    parser.add_argument(
        "--cluster", action="store_true", help="with --streams-only: the platform on a Redis Cluster of six nodes (three masters)"
    )
    args = parser.parse_args()
    if args.cluster and not args.streams_only:
        parser.error("--cluster goes with --streams-only: the peers are measured beside a single Redis")
    RESULTS.mkdir(parents=True, exist_ok=True)
    binary = None if args.streams_only else install_litellm()
    portkey_entry = None if args.streams_only else install_portkey()
    workdir = Path(tempfile.mkdtemp(prefix="chatbot-bench-"))
    cluster = RedisClusterNodes(workdir / "cluster").start() if args.cluster else None
    redis = RedisServer(workdir / "redis").start()
    processes: list[subprocess.Popen[bytes]] = []
    platform: LocalPlatform | None = None
    try:
        upstream_process, instant = start_upstream(0, workdir)
        paced_process, paced = start_upstream(20, workdir)
        processes += [upstream_process, paced_process]
        upstream = Target("upstream (floor)", instant, "bench-model", "none", [upstream_process.pid])
        platform, ours = start_platform(instant, paced, workdir, cluster.url if cluster else redis.url)
        parts = platform_parts(platform, cluster.servers if cluster else [redis], paced_process)
        if binary is None or portkey_entry is None:
            print(f"bench: streams only{' on a Redis Cluster' if cluster else ''}; work dir {workdir}", flush=True)
            many = streams_through(ours, "bench-paced", args.streams, args.stream_seconds, parts, paced, None if cluster else redis)
            print(cpu_line(many, args), flush=True)
            return
        litellm_process, litellm = start_litellm(binary, instant, paced, workdir)
        portkey_process, portkey, portkey_paced = start_portkey(portkey_entry, instant, paced, workdir)
        processes += [litellm_process, portkey_process]
        targets = [upstream, ours, portkey, litellm]
        ours.pids = [pid for name, pids in parts.items() if name not in HARNESS for pid in pids]
        print(f"bench: targets up; work dir {workdir}", flush=True)

        # 1. Throughput: 50-token streams, instant upstream, 32 clients; rounds alternate the targets, each begun on an
        # idle machine. A target's CPU is counted until the machine is idle again, so what it still does after its
        # round (this platform storing the round's events) is its own and not the next target's.
        load: dict[str, list[Sample]] = {t.name: [] for t in targets}
        cpu = {t.name: {"target": 0.0, "harness": 0.0} for t in targets}
        for round_ in range(args.rounds):
            for target in targets:
                harness = [] if target is upstream else [upstream_process.pid]  # the floor's upstream is its target
                waited = wait_idle(children(os.getpid())[1:])
                before = target_and_harness(target.pids, harness)
                load[target.name] += uvloop.run(throughput(target, 32, args.seconds))
                wait_idle(children(os.getpid())[1:])
                for part, seconds in target_and_harness(target.pids, harness).items():
                    cpu[target.name][part] += seconds - before[part]
                done = len(load[target.name])
                print(f"bench: throughput round {round_ + 1} {target.name}: {done} requests so far (idle after {waited:.1f} s)", flush=True)
        measured = {name: summarize(samples, args.seconds * args.rounds) for name, samples in load.items()}
        for name, samples in load.items():
            completed = max(1, sum(1 for s in samples if s.error is None))
            measured[name] |= {f"cpu_{k}_us": v / completed * 1e6 for k, v in cpu[name].items()}

        # 2. Latency: one client, time to first token, each target measured idle (after the
        # throughput load, the platform's event consumers still store tens of thousands of events).
        single: dict[str, list[float]] = {t.name: [] for t in targets}
        for _ in range(2):
            for target in targets:
                waited = wait_idle(children(os.getpid())[1:])
                print(f"bench: latency {target.name} (machine idle after {waited:.1f} s)", flush=True)
                single[target.name] += [s.ttft for s in uvloop.run(sequential(target, args.latency_requests // 2)) if s.ttft]
        ttft = {name: quantile(values, 0.5) * 1000 for name, values in single.items()}

        # 3. The cost curve: CPU per delivered token at each load, this platform's (every process, Redis included)
        # and Portkey's, the harness's own cost apart.
        portkey_parts = {"Portkey": [portkey_process.pid], "upstream": [paced_process.pid]}
        curve: dict[int, dict[str, dict[str, Any]]] = {}
        for streams in CURVE:
            curve[streams] = {}
            for name, target, model, target_parts in (
                ("ours", ours, "bench-paced", parts),
                ("Portkey", portkey_paced, "bench-model", portkey_parts),
            ):
                print(f"bench: cost curve, {streams} paced streams through {name}", flush=True)
                curve[streams][name] = streams_through(target, model, streams, args.curve_seconds, target_parts, paced, None)

        # 4. Many paced streams through this platform, for longer.
        many = streams_through(ours, "bench-paced", args.streams, args.stream_seconds, parts, paced, redis)
        rss = {t.name: peak_rss_mb(t.pids) for t in targets}
        platform_rss = {name: peak_rss_mb(pids) for name, pids in parts.items() if name not in HARNESS}
        write_results(targets, measured, ttft, curve, many, rss, platform_rss, args)
    finally:
        for process in processes:
            process.terminate()
        if platform is not None:
            platform.stop()
        redis.stop()
        if cluster is not None:
            cluster.stop()


def write_results(
    targets: list[Target],
    measured: dict[str, dict[str, float]],
    ttft: dict[str, float],
    curve: dict[int, dict[str, dict[str, Any]]],
    many: dict[str, Any],
    rss: dict[str, float],
    platform_rss: dict[str, float],
    args: argparse.Namespace,
) -> None:
    cost = {streams: {name: own_cost(m) for name, m in by.items()} for streams, by in curve.items()}
    lines = [
        f"# Gateway benchmark ({time.strftime('%Y-%m-%d', time.gmtime())}, {os.cpu_count()} cores, everything on one machine)",
        "",
        f"Throughput: 50-token streams, instant upstream, 32 concurrent clients, {args.rounds} alternating rounds of "
        f"{args.seconds:g} s per target. Latency: one client, {args.latency_requests} requests. {LITELLM}, one worker; "
        "Portkey's gateway 1.15.2, one Node.js process.",
        "",
        "| target | requests/s | tokens/s | CPU a request (harness apart) | TTFT p50 (32 clients) | TTFT p99 | inter-token p99 | TTFT p50 (1 client) | errors | peak RSS (all processes) |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for t in targets:
        m = measured[t.name]
        lines.append(
            f"| {t.name} | {m['requests_per_s']:.0f} | {m['tokens_per_s']:.0f} | {m['cpu_target_us']:,.0f} µs ({m['cpu_harness_us']:,.0f}) | "
            f"{m['ttft_p50_ms']:.1f} ms | {m['ttft_p99_ms']:.1f} ms | {m['gap_p99_ms']:.1f} ms | {ttft[t.name]:.2f} ms | {m['errors']:.0f} | {rss[t.name]:.0f} MB |"
        )
    lines += [
        "",
        "CPU a request: every process of the target (this platform's gateway, workers, Redis and other services; the bare "
        "upstream for the floor), from the start of its rounds until the machine was idle again, over the requests completed; "
        "in brackets the harness's (the upstream and the load client; for the floor, the load client) for the same requests. "
        "Peak RSS: each of the target's processes' peak resident memory, summed; this platform's by part: "
        + ", ".join(f"{name} {mb:.0f} MB" for name, mb in platform_rss.items())
        + ".",
    ]
    lines += [
        "",
        f"CPU per delivered token, paced streams (20 tokens/s each, {args.curve_seconds} s), the harness (upstream and load client) apart:",
        "",
        "| paced streams | Chatbot-LLM (gateway / workers / Redis / other) | Portkey | harness with ours / with Portkey | inter-token p50, ours / Portkey |",
        "|---|---|---|---|---|",
    ]
    for streams, by in curve.items():
        c, k = by["ours"]["cpu_per_token"], by["Portkey"]["cpu_per_token"]
        lines.append(
            f"| {streams:,} | {cost[streams]['ours']:.1f} µs ({c['gateway']:.1f} / {c['workers']:.1f} / {c['Redis']:.1f} / {c['other services']:.1f}) | "
            f"{cost[streams]['Portkey']:.1f} µs | {c['upstream'] + c['load client']:.1f} / {k['upstream'] + k['load client']:.1f} µs | "
            f"{by['ours']['gap_p50']:.1f} / {by['Portkey']['gap_p50']:.1f} ms |"
        )
    targets_met = verdicts([t.name for t in targets], measured, ttft, curve, many, platform_rss["gateway"], args)
    lines += ["", "| target | met | measured |", "|---|---|---|"]
    lines += [f"| {name} | {'yes' if ok else '**no**'} | {detail} |" for name, ok, detail in targets_met]
    lines += ["", cpu_line(many, args)]
    lines += ["", "The conversation store's targets are in `conversations.md`."]
    (RESULTS / "latest.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    chart(targets, measured, ttft, cost)


def verdicts(
    names: list[str],
    measured: dict[str, dict[str, float]],
    ttft: dict[str, float],
    curve: dict[int, dict[str, dict[str, Any]]],
    many: dict[str, Any],
    gateway_rss: float,
    args: argparse.Namespace,
) -> list[tuple[str, bool, str]]:
    """Each of issue #24's targets: its name, whether this run met it, and what was measured. `names` are the floor's,
    this platform's, Portkey's and LiteLLM's, in that order."""
    floor, ours, portkey, litellm = names
    rps = {name: measured[name]["requests_per_s"] for name in (ours, portkey, litellm)}
    overhead = {name: ttft[name] - ttft[floor] for name in (ours, portkey, litellm)}
    # A peer that answered no request in time has no overhead (NaN), and then no target is met against the better peer.
    better_peer = min(overhead[portkey], overhead[litellm]) if all(math.isfinite(overhead[n]) for n in (portkey, litellm)) else math.nan
    cost = {streams: {name: own_cost(m) for name, m in by.items()} for streams, by in curve.items()}
    errors = measured[ours]["errors"]
    # A peer that failed requests was not measured doing the work: no target is met against it.
    peer_errors = {name: int(measured[name]["errors"]) for name in (portkey, litellm)}
    curve_errors = {s: int(by["Portkey"]["errors"]) for s, by in curve.items()}
    failed = "; ".join(f"{name} failed {n:,} requests" for name, n in peer_errors.items() if n)
    failed_curve = "; ".join(f"Portkey failed {n:,} streams at {s:,}" for s, n in curve_errors.items() if n)
    return [
        ("1. throughput ≥ 1.5× Portkey's and ≥ 10× LiteLLM's, zero errors",
         rps[ours] >= 1.5 * rps[portkey] and rps[ours] >= 10 * rps[litellm] and errors == 0 and not failed,
         f"{rps[ours] / max(rps[portkey], 1e-9):.2f}× Portkey, {rps[ours] / max(rps[litellm], 1e-9):.1f}× LiteLLM, {errors:.0f} errors "
         f"(CPU a request {measured[ours]['cpu_target_us'] / max(measured[portkey]['cpu_target_us'], 1e-9):.2f}× Portkey's)"
         + (f"; not measured: {failed}" if failed else "")),
        ("2. CPU per delivered token ≤ Portkey's at " + ", ".join(f"{s:,}" for s in curve) + " paced streams",
         all(by["ours"] <= by["Portkey"] for by in cost.values()) and not failed_curve,
         ", ".join(f"{s:,}: {by['ours']:.0f} vs {by['Portkey']:.0f} µs" for s, by in cost.items())
         + (f"; not measured: {failed_curve}" if failed_curve else "")),
        ("3. TTFT overhead p50 (1 client) ≤ ⅓ of the better peer's", overhead[ours] <= better_peer / 3,
         f"{overhead[ours]:.2f} ms vs Portkey {overhead[portkey]:.2f} ms, LiteLLM {overhead[litellm]:.2f} ms ({overhead[ours] / max(better_peer, 1e-9):.2f}×)"),
        (f"4. {args.streams:,} streams at 20 tokens/s for {args.stream_seconds} s: zero errors, added inter-token p99 ≤ 50 ms, gateway RSS ≤ 300 MB",
         many["errors"] == 0 and many["gap_p99"] <= 50 and gateway_rss <= 300,
         f"{many['errors']:.0f} errors{' ' + str(many['kinds']) if many['kinds'] else ''}, +{many['gap_p99']:.1f} ms (client and upstream alone: +{many['floor_gap_p99']:.1f} ms), gateway {gateway_rss:.0f} MB"),
    ]  # fmt: skip


def cpu_line(many: dict[str, Any], args: argparse.Namespace) -> str:
    cpu = many["cpu_per_token"]
    ours_cpu = sum(v for k, v in cpu.items() if k not in ("upstream", "load client"))
    return (
        f"CPU per token delivered at {many['streams']:,} paced streams for {args.stream_seconds} s (µs): {', '.join(f'{k} {v:.1f}' for k, v in cpu.items())}; "
        f"the platform {ours_cpu:.1f}, the bench's upstream and client {cpu['upstream'] + cpu['load client']:.1f}. "
        f"At {args.streams * 20:,} tokens/s, {os.cpu_count()} cores allow {(os.cpu_count() or 1) * 1e6 / (args.streams * 20):.0f} µs per token in all. "
        f"Redis commands per token: {', '.join(f'{k} {v:.3f}' for k, v in many['calls_per_token'].items())}; "
        f"added inter-token p99 +{many['gap_p99']:.1f} ms, {many['errors']} errors."
    )


def chart(targets: list[Target], measured: dict[str, dict[str, float]], ttft: dict[str, float], cost: dict[int, dict[str, float]]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [t.name for t in targets]
    colours = ["#999999", "#2b7bba", "#7a4bb5", "#d9822b"]
    figure, (left, middle, right) = plt.subplots(1, 3, figsize=(15, 4))
    left.bar(names, [measured[n]["requests_per_s"] for n in names], color=colours)
    left.set_title("completed requests/s (32 clients, 50 tokens)")
    middle.bar(names, [ttft[n] for n in names], color=colours)
    middle.set_title("time to first token p50, one client (ms)")
    for axis in (left, middle):
        axis.tick_params(axis="x", labelrotation=10)
    loads = list(cost)
    right.plot(loads, [cost[s]["ours"] for s in loads], marker="o", color=colours[1], label="Chatbot-LLM (all processes, Redis included)")
    right.plot(loads, [cost[s]["Portkey"] for s in loads], marker="o", color=colours[2], label="Portkey gateway")
    right.set_xscale("log")
    right.set_xticks(loads, [f"{s:,}" for s in loads])
    right.set_ylim(bottom=0)
    right.set_title("CPU per delivered token (µs) by paced streams")
    right.legend()
    figure.tight_layout()
    figure.savefig(RESULTS / "latest.png", dpi=100)
    print(f"bench: wrote {RESULTS / 'latest.md'} and latest.png")


if __name__ == "__main__":
    main()
