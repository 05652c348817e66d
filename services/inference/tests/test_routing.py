"""The router's shared state against a real Redis: cooldowns, half-open probes, least-busy counts, latency and cost order."""

from __future__ import annotations

import asyncio
from collections import Counter

import redis.asyncio as aioredis

from chatbot_contracts import Keys, ModelSpec, Registry, Route
from chatbot_inference.routing import Router


def routes(routing: str, **alias_fields: object) -> tuple[ModelSpec, list[Route]]:
    fields = "".join(f"{k} = {v}\n" for k, v in alias_fields.items())
    text = f'[models."m"]\nrouting = "{routing}"\n{fields}'
    for name, price in (("a", 1.0), ("b", 0.5)):
        text += (
            f'[[models."m".deployments]]\nname = "{name}"\nprovider = "openai"\nupstream_model = "{name}"\ninput_usd_per_mtok = {price}\n'
        )
    registry = Registry.parse(text)
    spec = registry.get("m")
    assert spec is not None
    return spec, registry.routes("m")


async def test_a_single_provider_alias_needs_no_routing_state(redis: aioredis.Redis, namespace: str) -> None:
    registry = Registry.parse('[models."s"]\nprovider = "openai"\nupstream_model = "x"\n')
    plan = await Router(redis, Keys(namespace)).plan(registry.models["s"], registry.routes("s"), "r1")
    assert [route.name for route in plan.routes] == ["s"] and plan.skipped == {}


async def test_allowed_fails_cool_a_deployment_down_then_one_probe_decides(redis: aioredis.Redis, namespace: str) -> None:
    spec, (a, b) = routes("weighted", allowed_fails=2, cooldown_s=0.3)
    router = Router(redis, Keys(namespace))
    assert await router.failed(spec, a) == 0, "one failure is allowed"
    assert await router.failed(spec, a) == 0.3, "the second cools it down"
    plan = await router.plan(spec, [a, b], "r1")
    assert [r.name for r in plan.routes] == ["b"] and plan.skipped["a"].startswith("cooling down for")
    assert plan.reason("weighted").startswith("weighted; skipped a: cooling down for")

    await router.failed(spec, b, retry_after_s=0.5)  # a 429 with Retry-After: cooled at once, at least that long
    empty = await router.plan(spec, [a, b], "r2")
    assert empty.routes == [] and empty.retry_after_s is not None and 0 < empty.retry_after_s <= 0.3

    await asyncio.sleep(0.35)  # a's cooldown is over: half-open
    probing = await router.plan(spec, [a, b], "r3")
    assert [r.name for r in probing.routes] == ["a"] and probing.probes == {"a"}
    other = await router.plan(spec, [a, b], "r4")
    assert other.routes == [] and other.skipped["a"] == "half-open: another request is probing it"
    assert await router.failed(spec, a) == 0.3, "a failed probe cools it down again at once"

    await asyncio.sleep(0.55)
    probing = await router.plan(spec, [a, b], "r5")
    assert {r.name for r in probing.routes} == {"a", "b"} and probing.probes == {"a", "b"}
    await router.succeeded(probing.routes[0], probe=True)
    await router.succeeded(probing.routes[1], probe=True)
    healthy = await router.plan(spec, [a, b], "r6")
    assert {r.name for r in healthy.routes} == {"a", "b"} and healthy.probes == frozenset() and healthy.skipped == {}


async def test_least_busy_counts_each_request_where_it_sends_it(redis: aioredis.Redis, namespace: str) -> None:
    spec, both = routes("least-busy")
    router = Router(redis, Keys(namespace))
    plans = await asyncio.gather(*(router.plan(spec, both, f"r{i}") for i in range(10)))
    assert Counter(plan.routes[0].name for plan in plans) == {"a": 5, "b": 5}, "planned at once, and still spread"
    async with router.running(spec, plans[0].routes[0], "r0"):
        pass  # done: no longer counted
    plan = await router.plan(spec, both, "r10")
    assert plan.routes[0].name == plans[0].routes[0].name


async def test_lowest_latency_prefers_the_faster_and_lowest_cost_the_cheaper(redis: aioredis.Redis, namespace: str) -> None:
    spec, (a, b) = routes("lowest-latency")
    router = Router(redis, Keys(namespace))
    for _ in range(3):
        await router.observe(spec, a, "ttft_s", 0.05)
        await router.observe(spec, b, "ttft_s", 0.8)
    firsts = Counter([(await router.plan(spec, [a, b], f"r{i}")).routes[0].name for i in range(200)])
    assert firsts["a"] >= 180, firsts  # one in twenty explores

    cheap_spec, cheap_routes = routes("lowest-cost")
    plans = [await router.plan(cheap_spec, cheap_routes, f"c{i}") for i in range(20)]
    assert all([r.name for r in plan.routes] == ["b", "a"] for plan in plans)
