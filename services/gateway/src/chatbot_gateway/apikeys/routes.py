"""`/api/v1/admin/keys`: the admin's API for keys."""

from __future__ import annotations

from typing import Any

from litestar import Request, delete, get, post
from litestar.datastructures import State
from litestar.params import FromPath, JSONBody

from ..auth import Principal
from ..errors import Forbidden, NotFound
from .store import CreatedKey, KeyInfo, NewKey


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
    return await state.key_store.list()  # type: ignore[no-any-return]


@delete("/api/v1/admin/keys/{key_id:str}", tags=["admin"], status_code=204)
async def revoke_key(request: Request[Principal, Any, Any], state: State, key_id: FromPath[str]) -> None:
    """Revoke a key; every gateway refuses it within a second."""
    _admin(request)
    if not await state.key_store.revoke(key_id):
        raise NotFound(f"no key {key_id}")


ROUTES = [create_key, list_keys, revoke_key]
