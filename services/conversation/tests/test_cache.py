"""The tree cache in Redis: served when fresh, never stale after a write, harmless when Redis is gone."""

from __future__ import annotations

import redis.asyncio as aioredis

from chatbot_contracts.conversations import ConversationPatch, NewConversation
from chatbot_conversation.cache import TreeCache
from chatbot_conversation.service import ConversationService, Principal

ALICE = Principal(owner="alice")


async def test_a_read_racing_a_write_never_stores_the_old_tree(redis: aioredis.Redis, namespace: str) -> None:
    cache = TreeCache(redis, namespace)
    _, _, seen = await cache.load("c1")
    await cache.forget("c1")  # a write lands while the read is still at the database
    await cache.store("c1", "alice", b"old tree", seen)
    assert (await cache.load("c1"))[1] is None
    _, _, now = await cache.load("c1")
    await cache.store("c1", "alice", b"new tree", now)
    assert (await cache.load("c1"))[:2] == ("alice", b"new tree")


async def test_reads_are_cached_and_writes_drop_them(service: ConversationService, redis: aioredis.Redis, namespace: str) -> None:
    made = await service.create(ALICE, NewConversation(title="Before"))
    await service.get(ALICE, made.id)
    assert await redis.exists(f"{namespace}conv.tree.{{{made.id}}}")
    await service.patch(ALICE, made.id, ConversationPatch(title="After"))
    assert not await redis.exists(f"{namespace}conv.tree.{{{made.id}}}")
    assert (await service.get(ALICE, made.id)).title == "After"


async def test_without_redis_every_read_goes_to_the_database(service: ConversationService) -> None:
    from chatbot_devtools.redis_server import free_port

    service.cache = TreeCache(aioredis.Redis.from_url(f"redis://127.0.0.1:{free_port()}/0", socket_connect_timeout=0.2), "x:")
    made = await service.create(ALICE, NewConversation(title="No Redis"))
    await service.patch(ALICE, made.id, ConversationPatch(title="Still works"))
    assert (await service.get(ALICE, made.id)).title == "Still works"
