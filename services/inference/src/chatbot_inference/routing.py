"""Choosing among an alias's deployments, with health, load and latency shared by every worker through Redis.

For each request the worker asks the `Router` for a plan: the alias's deployments that may be
called now, in the order its routing strategy prefers, and the ones left out with why. A
deployment is left out while it cools down: `allowed_fails` retryable failures within
`fail_window_s` (or one 429 with Retry-After) cool it for `cooldown_s` (at least the Retry-After)
for the whole platform. After the cooldown it is half-open: the first request to claim its probe
calls it, and that call decides (a success closes it, a failure cools it again); other requests
leave it out meanwhile. Every state change is one Lua script on keys of one hash slot per
deployment (`route.{<name>}.*`), so workers never race.

Strategies: `weighted` (random, in proportion to `weight`), `least-busy` (fewest running
requests across all workers: a sorted set of leases per deployment), `lowest-latency` (moving
averages of time to first token and of tokens per second; one request in twenty explores a
random order, so a deployment that got faster is noticed), `lowest-cost` (cheapest prices first).
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections.abc import AsyncIterator, Sequence

import msgspec
import redis.asyncio as aioredis
import redis.exceptions
import structlog

from chatbot_contracts import Keys, ModelSpec, Route

log = structlog.get_logger()

EXPLORE = 0.05
"""The share of lowest-latency requests that take a random order (to notice a deployment that got faster)."""
LATENCY_WEIGHT = 0.2
"""How much a new measurement moves a deployment's moving averages."""
TOKENS_FOR_LATENCY = 256
"""Lowest-latency ranks by the time to an answer of this many tokens: time to first token plus tokens / rate."""
LEASE_MS = 30_000
"""A running request's lease in its deployment's count; renewed while it runs, so a dead worker's requests drop out."""

# KEYS: fails (sorted set of failure times), cooldown, tripped, probe. ARGV: now ms, window ms, allowed fails, cooldown ms,
# member, at least ms (a Retry-After; 0 without). Returns the cooldown's ms when this failure cooled the deployment, else 0.
# Cooling frees the probe, so that the first request after the cooldown may probe again.
_FAILED = """
local now, window, allowed, cool, least = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[6])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - window)
redis.call('ZADD', KEYS[1], now, ARGV[5])
redis.call('PEXPIRE', KEYS[1], window)
if least > 0 or redis.call('EXISTS', KEYS[3]) == 1 or redis.call('ZCARD', KEYS[1]) >= allowed then
  local ms = math.max(cool, least)
  if redis.call('PTTL', KEYS[2]) < ms then redis.call('SET', KEYS[2], '1', 'PX', ms) end
  redis.call('SET', KEYS[3], '1', 'PX', ms + 86400000)
  redis.call('DEL', KEYS[1], KEYS[4])
  return ms
end
return 0
"""

# KEYS: per deployment, in order: cooldown, tripped, probe, running, latency. ARGV: now ms, probe ms, holder, least-busy
# (1 or 0). For each deployment: its cooldown's ms left, whether this request holds its probe (1), was refused one (-1) or
# none is needed (0), its running count, and its time to first token and tokens per second (or false). With least-busy,
# the healthy deployment with the fewest running (the first in ARGV order among equals; a probe this request holds before
# all) counts this request at once, in the same script, so that requests planned at the same moment spread; its position
# is the last reply (0: none).
_PLAN = (
    """
local now, probe_ms, holder, least = tonumber(ARGV[1]), tonumber(ARGV[2]), ARGV[3], ARGV[4] == '1'
local out, best, fewest = {}, 0, nil
for i = 1, #KEYS / 5 do
  local k = (i - 1) * 5
  local cooling = redis.call('PTTL', KEYS[k + 1])
  if cooling < 0 then cooling = 0 end
  local probe = 0
  if cooling == 0 and redis.call('EXISTS', KEYS[k + 2]) == 1 then
    if redis.call('SET', KEYS[k + 3], holder, 'NX', 'PX', probe_ms) then probe = 1 else probe = -1 end
  end
  redis.call('ZREMRANGEBYSCORE', KEYS[k + 4], '-inf', now)
  local running = redis.call('ZCARD', KEYS[k + 4])
  local latency = redis.call('HMGET', KEYS[k + 5], 'ttft_s', 'tokens_per_s')
  table.insert(out, cooling); table.insert(out, probe); table.insert(out, running)
  table.insert(out, latency[1]); table.insert(out, latency[2])
  if least and probe == 1 then
    best, fewest = i, -1  -- a probe is called first: the request counts there
  elseif least and cooling == 0 and probe == 0 and (fewest == nil or running < fewest) then
    best, fewest = i, running
  end
end
if best > 0 then
  local key = KEYS[(best - 1) * 5 + 4]
  redis.call('ZADD', key, now + """
    + str(LEASE_MS)
    + """, holder)
  redis.call('PEXPIRE', key, """
    + str(LEASE_MS)
    + """)
end
table.insert(out, best)
return out
"""
)

# KEYS: latency hash. ARGV: field, value, weight. An exponential moving average.
_AVERAGE = """
local old = tonumber(redis.call('HGET', KEYS[1], ARGV[1]))
local value = tonumber(ARGV[2])
if old then value = old + tonumber(ARGV[3]) * (value - old) end
redis.call('HSET', KEYS[1], ARGV[1], tostring(value))
redis.call('PEXPIRE', KEYS[1], 86400000)
return 1
"""


class Plan(msgspec.Struct, frozen=True):
    """The deployments to try, in order, and those left out (name -> why)."""

    routes: list[Route]
    skipped: dict[str, str]
    probes: frozenset[str] = frozenset()
    """Half-open deployments whose probe this request holds: their call decides whether they are healthy again."""
    retry_after_s: float | None = None
    """When every deployment is cooling down: how long until the first is back."""

    def reason(self, strategy: str) -> str:
        """The choice in words, for the events and the log: the strategy, and what was left out and why."""
        left_out = "; ".join(f"skipped {name}: {why}" for name, why in self.skipped.items())
        return f"{strategy}; {left_out}" if left_out else strategy


class Router:
    """The routing state of every deployment, in Redis."""

    def __init__(self, redis: aioredis.Redis, keys: Keys) -> None:
        self._redis = redis
        self._keys = keys
        self._plan = redis.register_script(_PLAN)
        self._failed = redis.register_script(_FAILED)
        self._average = redis.register_script(_AVERAGE)

    def _key(self, route: Route, kind: str) -> str:
        """A deployment's key, tagged with its alias: every script over an alias's deployments stays in one hash slot."""
        return f"{self._keys.namespace}route.{{{route.alias}}}.{route.name}.{kind}"

    async def plan(self, spec: ModelSpec, routes: Sequence[Route], holder: str) -> Plan:
        """The deployments of an alias (`spec`, its `routes`) that may be called now, in the order `spec.routing` prefers.

        With least-busy routing, the first one already counts `holder` as running on it."""
        if len(routes) == 1 and not routes[0].deployment:
            return Plan(list(routes), {})
        order = _weighted_order(list(routes))  # ties go by weight, at random
        keys = [self._key(route, kind) for route in order for kind in ("cooldown", "tripped", "probe", "running", "latency")]
        probe_ms = int((spec.first_token_timeout_s or 60.0) * 1000) + 5000
        args: list[int | str] = [int(time.time() * 1000), probe_ms, holder, int(spec.routing == "least-busy")]
        try:
            replies = await self._plan(keys=keys, args=args)
        except (redis.exceptions.RedisError, OSError) as exc:
            log.warning("routing.state_unreadable", error=str(exc))
            return Plan(order, {})
        healthy: list[Route] = []
        skipped: dict[str, str] = {}
        probes: set[str] = set()
        load: dict[str, float] = {}
        cooling_ms: list[int] = []
        for index, route in enumerate(order):
            cooldown_ms, probe, running, ttft, rate = replies[index * 5 : index * 5 + 5]
            if int(cooldown_ms) > 0:
                skipped[route.name] = f"cooling down for {int(cooldown_ms) / 1000:.1f} s more"
                cooling_ms.append(int(cooldown_ms))
                continue
            if int(probe) < 0:
                skipped[route.name] = "half-open: another request is probing it"
                continue
            if int(probe) > 0:
                probes.add(route.name)
            if spec.routing == "least-busy":
                load[route.name] = float(running)
            elif spec.routing == "lowest-latency":
                load[route.name] = (float(ttft) if ttft else 0.0) + (TOKENS_FOR_LATENCY / float(rate) if rate else 0.0)
            healthy.append(route)
        ordered = self._ordered(spec, healthy, load)
        chosen = int(replies[-1])
        if chosen:  # least-busy: the one the script counted this request on goes first
            ordered.sort(key=lambda route: route is not order[chosen - 1])
        ordered.sort(key=lambda route: route.name not in probes)  # a probe goes first: its call decides
        retry_after = min(cooling_ms) / 1000 if cooling_ms and not ordered else None
        return Plan(ordered, skipped, frozenset(probes), retry_after)

    @staticmethod
    def _ordered(spec: ModelSpec, routes: list[Route], load: dict[str, float]) -> list[Route]:
        if spec.routing == "weighted" or (spec.routing == "lowest-latency" and random.random() < EXPLORE):
            return routes  # already in a weighted random order
        if spec.routing == "lowest-cost":
            return sorted(routes, key=lambda r: r.spec.input_usd_per_mtok + r.spec.output_usd_per_mtok)
        return sorted(routes, key=lambda r: load.get(r.name, 0.0))  # stable: ties keep their weighted order

    async def failed(self, spec: ModelSpec, route: Route, retry_after_s: float | None = None) -> float:
        """A retryable failure of `route`'s deployment; the cooldown it started, in seconds (0: none)."""
        if not route.deployment:
            return 0.0
        now_ms = int(time.time() * 1000)
        keys = [self._key(route, kind) for kind in ("fails", "cooldown", "tripped", "probe")]
        args: list[str | int] = [now_ms, int(spec.fail_window_s * 1000), spec.allowed_fails, int(spec.cooldown_s * 1000)]
        args += [f"{now_ms}-{random.random()}", int((retry_after_s or 0) * 1000)]
        try:
            cooled_ms = int(await self._failed(keys=keys, args=args))
        except (redis.exceptions.RedisError, OSError) as exc:
            log.warning("routing.failure_unrecorded", deployment=route.name, error=str(exc))
            return 0.0
        if cooled_ms:
            log.warning("routing.cooldown", deployment=route.name, cooldown_s=cooled_ms / 1000)
        return cooled_ms / 1000

    async def succeeded(self, route: Route, probe: bool) -> None:
        """`route`'s deployment answered; a probe's success closes it (healthy again)."""
        if probe:
            with contextlib.suppress(redis.exceptions.RedisError, OSError):
                await self._redis.delete(self._key(route, "tripped"), self._key(route, "fails"), self._key(route, "probe"))
            log.info("routing.recovered", deployment=route.name)

    async def observe(self, spec: ModelSpec, route: Route, field: str, value: float) -> None:
        """A latency measurement (`ttft_s` or `tokens_per_s`) of `route`'s deployment, for lowest-latency routing."""
        if spec.routing != "lowest-latency" or not route.deployment:
            return
        with contextlib.suppress(redis.exceptions.RedisError, OSError):
            await self._average(keys=[self._key(route, "latency")], args=[field, value, LATENCY_WEIGHT])

    @contextlib.asynccontextmanager
    async def running(self, spec: ModelSpec, route: Route, holder: str) -> AsyncIterator[None]:
        """Count a request as running on `route`'s deployment for the duration (least-busy routing reads the counts)."""
        if spec.routing != "least-busy" or not route.deployment:
            yield
            return
        key = self._key(route, "running")
        with contextlib.suppress(redis.exceptions.RedisError, OSError):  # the plan counted it on its first choice already
            await self._redis.zadd(key, {holder: int(time.time() * 1000) + LEASE_MS})
        renewer = asyncio.create_task(self._renew(key, holder))
        try:
            yield
        finally:
            renewer.cancel()
            with contextlib.suppress(redis.exceptions.RedisError, OSError):
                await self._redis.zrem(key, holder)

    async def _renew(self, key: str, holder: str) -> None:
        while True:
            await asyncio.sleep(LEASE_MS / 3000)
            with contextlib.suppress(redis.exceptions.RedisError, OSError):
                await self._redis.zadd(key, {holder: int(time.time() * 1000) + LEASE_MS}, xx=True)


def _weighted_order(routes: list[Route]) -> list[Route]:
    """`routes` in a random order where each comes first in proportion to its weight (sampling without replacement)."""
    left, ordered = list(routes), []
    while left:
        pick = random.choices(range(len(left)), weights=[r.weight for r in left])[0]
        ordered.append(left.pop(pick))
    return ordered
