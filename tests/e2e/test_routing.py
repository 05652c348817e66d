"""Routing over an alias's deployments on the real stack (a gateway, two workers, Redis), with fake deployments that are
slow or fail as scripted: weights, least-busy, lowest-latency, and a failing deployment cooled down for every worker."""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from chatbot_devtools.fakes import FakeOpenAI, Fault
from chatbot_devtools.platform import LocalPlatform
from chatbot_devtools.redis_cluster import sync_client
from chatbot_devtools.serve import ThreadedServer

pytestmark = pytest.mark.e2e


@pytest.fixture
def upstreams() -> Iterator[tuple[FakeOpenAI, FakeOpenAI]]:
    """Two fake deployments, `a` and `b`, each on its own port."""
    fakes = (FakeOpenAI(reply="from a"), FakeOpenAI(reply="from b"))
    servers = [ThreadedServer(fake).start() for fake in fakes]
    for fake, server in zip(fakes, servers, strict=True):
        fake.base_url = f"{server.url}/v1"
    yield fakes
    for server in servers:
        server.stop()


def registry(alias: str, a: FakeOpenAI, b: FakeOpenAI, routing: str, *, weights: tuple[int, int] = (1, 1), **alias_fields: object) -> str:
    lines = [f'[models."{alias}"]', f'routing = "{routing}"', *(f"{k} = {v}" for k, v in alias_fields.items())]
    for name, fake, weight in (("a", a, weights[0]), ("b", b, weights[1])):
        lines += [
            f'[[models."{alias}".deployments]]',
            f'name = "{alias}-{name}"',
            'provider = "openai"',
            f'upstream_model = "model-{name}"',
            f'base_url = "{fake.base_url}"',
            f"weight = {weight}",
        ]
    return "\n".join(lines) + "\n"


def running(platform_factory: Callable[..., LocalPlatform], models: str) -> tuple[LocalPlatform, httpx.Client]:
    platform = platform_factory(models)
    platform.start_log_collector()
    url = platform.start_gateway()
    platform.start_worker("worker-1")
    platform.start_worker("worker-2")
    platform.wait_ready(url)
    return platform, httpx.Client(base_url=url, headers={"Authorization": f"Bearer {platform.admin_key}"}, timeout=60)


def ask(api: httpx.Client, model: str) -> tuple[str, str]:
    """One answer (not streamed): the deployment the gateway names and the text."""
    response = api.post("/v1/chat/completions", json={"model": model, "messages": [{"role": "user", "content": "hi"}]})
    assert response.status_code == 200, response.text
    return response.headers["x-chatbot-deployment"], response.json()["choices"][0]["message"]["content"]


def test_weights_three_to_one_send_three_quarters_to_the_first(
    platform_factory: Callable[..., LocalPlatform], upstreams: tuple[FakeOpenAI, FakeOpenAI]
) -> None:
    a, b = upstreams
    _, api = running(platform_factory, registry("spread", a, b, "weighted", weights=(3, 1)))
    with ThreadPoolExecutor(16) as pool:
        answers = list(pool.map(lambda _: ask(api, "spread"), range(1000)))
    chosen = Counter(deployment for deployment, _ in answers)
    assert 0.70 <= chosen["spread-a"] / 1000 <= 0.80, chosen
    assert all(text == ("from a" if deployment == "spread-a" else "from b") for deployment, text in answers), (
        "the header names who answered"
    )
    assert (len(a.requests), len(b.requests)) == (chosen["spread-a"], chosen["spread-b"])
    assert {r["model"] for r in a.requests} == {"model-a"} and {r["model"] for r in b.requests} == {"model-b"}


def test_least_busy_keeps_the_running_counts_of_two_deployments_within_one(
    platform_factory: Callable[..., LocalPlatform], upstreams: tuple[FakeOpenAI, FakeOpenAI], redis_url: str, namespace: str
) -> None:
    a, b = upstreams
    for fake in upstreams:
        fake.reply, fake.token_delay_s = " ".join(f"w{i}" for i in range(30)), 0.05  # about 1.5 s an answer
    _, api = running(platform_factory, registry("busy", a, b, "least-busy"))
    keys = [f"{namespace}route.{{busy}}.busy-{name}.running" for name in "ab"]
    store = sync_client(redis_url)
    samples: list[tuple[int, int]] = []
    done = threading.Event()

    def sample() -> None:
        while not done.is_set():
            now_ms = int(time.time() * 1000)
            snapshot = store.pipeline(transaction=True)  # both counts at one instant (MULTI/EXEC)
            for key in keys:
                snapshot.zcount(key, now_ms, "+inf")
            x, y = snapshot.execute()
            samples.append((int(x), int(y)))
            time.sleep(0.01)

    sampler = threading.Thread(target=sample)
    sampler.start()
    try:
        with ThreadPoolExecutor(50) as pool:
            answers = list(pool.map(lambda _: ask(api, "busy"), range(50)))
    finally:
        done.set()
        sampler.join()
        store.close()
    assert len(answers) == 50
    # While streams start, each goes where fewer run; once they end, ends fall where they fall.
    first_end = next((i for i in range(1, len(samples)) if sum(samples[i]) < sum(samples[i - 1])), len(samples))
    placing = samples[:first_end]
    assert max(map(sum, placing)) >= 40, "the streams ran together"
    assert max(abs(x - y) for x, y in placing) <= 1, max(placing, key=lambda s: abs(s[0] - s[1]))
    assert abs(a.most_active - b.most_active) <= 2


def test_lowest_latency_sends_most_requests_to_the_faster_deployment(
    platform_factory: Callable[..., LocalPlatform], upstreams: tuple[FakeOpenAI, FakeOpenAI]
) -> None:
    a, b = upstreams
    a.token_delay_s = 0.1  # a: a tenth of a second to its first token and between tokens; b answers at once
    _, api = running(platform_factory, registry("quick", a, b, "lowest-latency"))
    for _ in range(10):  # warm-up: both get measured
        ask(api, "quick")
    assert a.requests, "the slow deployment was tried while nothing was known"
    after_warmup = Counter(ask(api, "quick")[0] for _ in range(100))
    assert after_warmup["quick-b"] >= 90, after_warmup


def test_a_failing_deployment_is_cooled_down_for_every_worker_and_comes_back(
    platform_factory: Callable[..., LocalPlatform], upstreams: tuple[FakeOpenAI, FakeOpenAI]
) -> None:
    a, b = upstreams
    a.faults.extend(Fault(status=500, message="a is down") for _ in range(1000))
    _, api = running(platform_factory, registry("healthy", a, b, "weighted", allowed_fails=2, cooldown_s=2, fail_window_s=60))
    answers = [ask(api, "healthy") for _ in range(30)]
    assert all(deployment == "healthy-b" for deployment, _ in answers), "no client saw the failures: b answered each"
    assert len(a.requests) == 2, "two failures (shared by both workers) cooled a down; it got nothing more"

    # The request log says which deployment answered and why: the strategy, and a left out while cooling down.
    response = api.post("/v1/chat/completions", json={"model": "healthy", "messages": [{"role": "user", "content": "hi"}]})
    request_id = response.headers["x-request-id"]
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        log = api.get(f"/api/v1/requests/{request_id}/log")
        events = log.json()["events"] if log.status_code == 200 else []
        if any(event["type"] == "completed" for event in events):
            break
        time.sleep(0.1)
    completed = next(event for event in events if event["type"] == "completed")
    assert completed["deployment"] == "healthy-b" and completed["upstream_model"] == "model-b"
    assert completed["route"].startswith("weighted; skipped healthy-a: cooling down for"), completed["route"]

    a.faults.clear()  # a recovers
    time.sleep(2.5)  # past the cooldown: the next request probes it
    later = Counter(ask(api, "healthy")[0] for _ in range(40))
    assert later["healthy-a"] >= 8, f"traffic came back to a after the cooldown: {later}"
    assert len(a.requests) == 2 + later["healthy-a"]
