"""`/api/v1/admin/keys`: the admin's API for keys."""

from __future__ import annotations

from typing import Any

from litestar import Request, delete, get, post, put
from litestar.datastructures import State
from litestar.params import FromPath, JSONBody

from ..auth import Principal
from ..errors import Forbidden, NotFound
from .store import CreatedKey, KeyInfo, NewKey, OwnerInfo, OwnerLimits


def _admin(request: Request[Principal, Any, Any]) -> None:
    if not request.user.is_admin:
        raise Forbidden("only an admin key may manage keys")


@post("/api/v1/admin/keys", tags=["admin"], status_code=201)
async def create_key(request: Request[Principal, Any, Any], state: State, data: JSONBody[NewKey]) -> CreatedKey:
    """A new key for an owner (a user or a team); its secret is in this response only."""
    _admin(request)
    for alias in data.models or ():
        if alias not in state.registry:
            raise NotFound(f"the model `{alias}` does not exist; GET /v1/models lists the available ones")
    return await state.key_store.create(data)  # type: ignore[no-any-return]


@get("/api/v1/admin/keys", tags=["admin"])
async def list_keys(request: Request[Principal, Any, Any], state: State) -> list[KeyInfo]:
    """The keys in use (never their secrets)."""
    _admin(request)
    return await state.key_store.list_keys()  # type: ignore[no-any-return]


@delete("/api/v1/admin/keys/{key_id:str}", tags=["admin"], status_code=204)
async def revoke_key(request: Request[Principal, Any, Any], state: State, key_id: FromPath[str]) -> None:
    """Revoke a key; every gateway refuses it within a second."""
    _admin(request)
    if not await state.key_store.revoke(key_id):
        raise NotFound(f"no key {key_id}")


@put("/api/v1/admin/owners/{owner:str}", tags=["admin"])
async def set_owner_limits(
    request: Request[Principal, Any, Any], state: State, owner: FromPath[str], data: JSONBody[OwnerLimits]
) -> OwnerInfo:
    """Requests and tokens per minute over all of an owner's keys, on top of each key's own (in force within a second)."""
    _admin(request)
    return await state.key_store.set_owner_limits(owner, data)  # type: ignore[no-any-return]


@get("/api/v1/admin/owners", tags=["admin"])
async def list_owners(request: Request[Principal, Any, Any], state: State) -> list[OwnerInfo]:
    """The owners that have limits of their own."""
    _admin(request)
    return await state.key_store.owners()  # type: ignore[no-any-return]


ROUTES = [create_key, list_keys, revoke_key, set_owner_limits, list_owners]
