"""Every multi-key command of the platform stays in one Redis Cluster slot: each Lua script, transaction and
same-slot pipeline, listed with the keys its caller builds, for one and for several stream partitions.

(A command whose keys span slots is refused by a cluster, CROSSSLOT; the cluster suite runs the platform on one, and
this list says which commands that covers and why each is safe.)
"""

from __future__ import annotations

import uuid

import pytest
import redis.asyncio as aioredis
from redis.crc import key_slot

from chatbot_contracts import Keys
from chatbot_contracts.registry import ModelSpec, Route
from chatbot_conversation.cache import TreeCache
from chatbot_inference.limits import ModelLimits
from chatbot_inference.routing import Router

PLAN_KINDS = ("cooldown", "tripped", "probe", "running", "latency")


def one_slot(keys: list[str]) -> bool:
    return len({key_slot(key.encode()) for key in keys}) == 1


def multi_key_commands(keys: Keys) -> dict[str, list[str]]:
    """Each multi-key command, by where it is, with the keys it names for a request, a key, an owner, an alias, a
    conversation."""
    request_id, key_id, owner, conversation = (uuid.uuid4().hex for _ in range(4))
    route = Route(alias="gpt", name="gpt-east", spec=ModelSpec(provider="openai", upstream_model="m"), deployment=True)
    other = Route(alias="gpt", name="gpt-west", spec=route.spec, deployment=True)
    unconnected = aioredis.Redis()  # only the key names are used
    router, limits = Router(unconnected, keys), ModelLimits(unconnected, keys)
    cache = TreeCache(None, keys.namespace)
    return {
        # gateway/relay.py _ADMIT: a request's first events, its owner and its admission into its partition.
        "relay: admission script": [
            keys.request_stream(request_id),
            keys.request_owner(request_id),
            keys.requests_for(request_id),
        ],
        # gateway/fairshare.py _ADMIT: running, stream and budget slots of a key, all or none.
        "fairshare: admission script": [keys.inflight(key_id), keys.open_streams(key_id), keys.spend(key_id, "month", "2026-12")],
        # gateway/ratelimit.py with contracts/buckets.py _TAKE: a key's buckets and its owner's together.
        "ratelimit: take script (key and owner)": [
            keys.rate(owner, key_id, "rpm"),
            keys.rate(owner, key_id, "tpm"),
            keys.rate(owner, None, "rpm"),
            keys.rate(owner, None, "tpm"),
        ],
        # inference/limits.py: an alias's per-minute buckets (the concurrency script takes one key).
        "model limits: take script": [limits._key("gpt", "rpm"), limits._key("gpt", "tpm")],
        # inference/routing.py _PLAN and _FAILED: every deployment of an alias.
        "routing: plan script": [router._key(each, kind) for each in (route, other) for kind in PLAN_KINDS],
        "routing: failure script": [router._key(route, kind) for kind in ("fails", "cooldown", "tripped", "probe")],
        # inference/worker.py: a generation's start (attempts, cancel flag, its entry's pending state).
        "worker: start of an attempt (pipeline)": [
            keys.attempts(request_id),
            keys.spared_attempts(request_id),
            keys.cancel_flag(request_id),
            keys.requests_for(request_id),
        ],
        # conversation/cache.py: a conversation's cached tree and its version (transactions and a script).
        "conversation cache: tree and version": cache._keys(conversation),
    }


@pytest.mark.parametrize("partitions", [1, 16])
def test_every_script_and_transaction_names_keys_of_one_slot(partitions: int) -> None:
    keys = Keys("ns:", partitions)
    commands = multi_key_commands(keys)
    crossing = {where: names for where, names in commands.items() if not one_slot(names)}
    if partitions == 1:
        # One partition is a single Redis's (a cluster is refused one): a request's queue is the single
        # chat.requests, in a slot of its own, named beside the request's keys only where one node holds them all.
        assert set(crossing) <= {"relay: admission script", "worker: start of an attempt (pipeline)"}
    else:
        assert crossing == {}


def test_partitions_spread_over_the_slots_evenly() -> None:
    keys = Keys("", 16)
    slots = [key_slot(name.encode()) for name in keys.requests_partitions]
    assert [slot * 16 // 16384 for slot in slots] == list(range(16)), "each partition falls in its own sixteenth of the slots"
    assert [key_slot(name.encode()) for name in keys.events_partitions] == slots
    counts = [0] * 16
    for i in range(16_000):
        counts[keys.partition_of(f"request-{i}")] += 1
    assert min(counts) > 800 and max(counts) < 1200, f"requests spread unevenly over the partitions: {counts}"
    gateway_wake = keys.gateway_wake("g", 5)
    assert key_slot(gateway_wake.encode()) == slots[5], "a partition's wake-up stream is read with its streams"
    request = "some-request"
    assert key_slot(keys.request_stream(request).encode()) == key_slot(keys.requests_for(request).encode())
