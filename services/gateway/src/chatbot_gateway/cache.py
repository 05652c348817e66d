"""`DELETE /api/v1/cache`: an admin purges an owner's cached answers (or the shared ones)."""

from __future__ import annotations

from typing import Any

import msgspec
from litestar import Request, delete
from litestar.datastructures import State
from litestar.params import FromQuery

from chatbot_contracts.cache import SHARED_SCOPE

from .auth import Principal
from .errors import BadRequest, Forbidden

PURGE_CHUNK = 500


class Purged(msgspec.Struct, frozen=True):
    scope: str
    """The owner whose entries were deleted, or `shared`."""
    deleted: int


@delete("/api/v1/cache", tags=["cache"], status_code=200)
async def purge_cache(
    request: Request[Principal, Any, Any], state: State, owner: FromQuery[str | None] = None, shared: FromQuery[bool] = False
) -> Purged:
    """Delete every cached answer of `owner` (or, with `shared=true`, of the aliases whose cache is shared). Admins only."""
    if not request.user.is_admin:
        raise Forbidden("only an admin key may purge the response cache")
    if bool(owner) == shared:
        raise BadRequest("name either `owner` or `shared=true`", param="owner")
    scope = SHARED_SCOPE if shared else str(owner)
    index = state.redis_keys.cache_index(scope)
    deleted = 0
    async for chunk in _chunks(state, index):
        deleted += int(await state.redis.delete(*chunk))
        await state.redis.srem(index, *chunk)
    return Purged(scope=scope, deleted=deleted)


async def _chunks(state: State, index: str) -> Any:
    batch: list[bytes] = []
    async for key in state.redis.sscan_iter(index, count=PURGE_CHUNK):
        batch.append(key)
        if len(batch) == PURGE_CHUNK:
            yield batch
            batch = []
    if batch:
        yield batch


ROUTES = [purge_cache]
