"""API keys: created by an admin, stored as hashes, resolved per request through a one-second cache.

The cache is what makes revocation reach every gateway replica within a second without a
database query per request.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import time
import uuid
from collections import OrderedDict
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any, Literal

import msgspec
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from chatbot_contracts.database import open_engine, upgrade

from ..auth import Principal
from .table import api_keys, owner_limits

CACHE_S = 1.0
"""How long a resolved key is believed without asking the database (revocation takes at most this long)."""
MISS_CACHE_S = 60.0
"""How long a secret that named no key is remembered as unknown (a new key's secret is new: it was never a miss)."""
CACHE_BOUND = 100_000
"""Keys and misses each remembered at most; the least recently used go first, misses never displace keys."""
DATABASE_KEY = re.compile(r"sk-chatbot-[A-Za-z0-9_-]{43}")
"""The form of every key this store creates: anything else is not looked up."""
PerMinute = Annotated[int, msgspec.Meta(ge=1, le=1_000_000_000)]
Bound = Annotated[int, msgspec.Meta(ge=1, le=1_000_000)]
"""A per-minute limit; bounded so that it fits every database's integer."""
MIGRATIONS = Path(__file__).with_name("migrations")


OWNER_PATTERN = r"^(?!admin$)[A-Za-z0-9][A-Za-z0-9._@+-]*$"
"""An owner: letters, digits and `._@+-`, not starting with punctuation; `admin` is reserved for the bootstrap key."""


class NewKey(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """`POST /api/v1/admin/keys`."""

    owner: Annotated[str, msgspec.Meta(min_length=1, max_length=200, pattern=OWNER_PATTERN)]
    """Any name but `admin`, which is the bootstrap admin's own."""
    models: list[str] | None = None
    """Aliases the key may use (None: all)."""
    rpm: PerMinute | None = None
    tpm: PerMinute | None = None
    budget_usd: Annotated[float, msgspec.Meta(ge=0, le=1e9)] | None = None
    budget_period: Literal["day", "week", "month"] | None = None
    max_running: Bound | None = None
    """Requests the key may have running at once (None: the gateway's `CHATBOT_MAX_INFLIGHT_PER_KEY`)."""
    max_streams: Bound | None = None
    """Streams the key may have open at once (None: the gateway's `CHATBOT_MAX_STREAMS_PER_KEY`)."""


class OwnerLimits(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """`PUT /api/v1/admin/owners/{owner}`: limits over all of an owner's keys (null: none)."""

    rpm: PerMinute | None = None
    tpm: PerMinute | None = None


class OwnerInfo(OwnerLimits, kw_only=True):
    owner: str


class KeyInfo(msgspec.Struct, kw_only=True):
    id: str
    owner: str
    prefix: str
    """The secret's first characters, to recognise a key without revealing it."""
    models: list[str] | None
    rpm: int | None
    tpm: int | None
    budget_usd: float | None
    budget_period: str | None
    max_running: int | None = None
    max_streams: int | None = None
    created_at: str


class CreatedKey(KeyInfo, kw_only=True):
    key: str
    """The secret: shown once, here, and never again."""


def _digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


class KeyStore:
    """Resolves secrets to principals: the bootstrap admin key from the environment, the rest from the database."""

    def __init__(self, admin_key: str, database_url: str) -> None:
        self._admin_digest = _digest(admin_key)
        self._admin = Principal(key_id="admin", owner="admin", is_admin=True)
        self._engine: AsyncEngine = open_engine(database_url, pool_size=5, max_overflow=5)
        self._keys: OrderedDict[str, tuple[float, Principal]] = OrderedDict()
        self._misses: OrderedDict[str, float] = OrderedDict()

    async def migrate(self) -> None:
        async with self._engine.begin() as connection:
            await connection.run_sync(upgrade, MIGRATIONS)

    async def close(self) -> None:
        await self._engine.dispose()

    def known(self, secret: str) -> Principal | Literal[False] | None:
        """What is known without the database: the principal, None (a miss or a malformed secret), or False (ask `lookup`)."""
        digest = _digest(secret)
        if hmac.compare_digest(digest, self._admin_digest):
            return self._admin
        if not DATABASE_KEY.fullmatch(secret):
            return None
        now = time.monotonic()
        cached = self._keys.get(digest)
        if cached is not None and cached[0] > now:
            self._keys.move_to_end(digest)
            return cached[1]
        missed = self._misses.get(digest)
        if missed is not None and missed > now:
            return None
        return False

    async def lookup(self, secret: str) -> Principal | None:
        """The key's principal, from the caches or else the database; None for a secret that names no live key."""
        known = self.known(secret)
        if known is not False:
            return known
        digest = _digest(secret)
        now = time.monotonic()
        query = (
            sa.select(api_keys, owner_limits.c.rpm.label("owner_rpm"), owner_limits.c.tpm.label("owner_tpm"))
            .select_from(api_keys.outerjoin(owner_limits, owner_limits.c.owner == api_keys.c.owner))
            .where(api_keys.c.secret_sha256 == digest, api_keys.c.revoked_at.is_(None))
        )
        async with self._engine.connect() as connection:
            row = (await connection.execute(query)).first()
        principal = None
        if row is not None:
            principal = Principal(
                key_id=row.id, owner=row.owner, models=tuple(row.models) if row.models is not None else None, rpm=row.rpm, tpm=row.tpm,
                budget_usd=row.budget_usd, budget_period=row.budget_period, owner_rpm=row.owner_rpm, owner_tpm=row.owner_tpm,
                max_running=row.max_running, max_streams=row.max_streams,
            )  # fmt: skip
        if principal is None:
            self._keys.pop(digest, None)
            _remember(self._misses, digest, now + MISS_CACHE_S)
        else:
            self._misses.pop(digest, None)
            _remember(self._keys, digest, (now + CACHE_S, principal))
        return principal

    async def create(self, new: NewKey) -> CreatedKey:
        secret = "sk-chatbot-" + secrets.token_urlsafe(32)
        row: dict[str, Any] = {
            "id": uuid.uuid4().hex,
            "secret_sha256": _digest(secret),
            "prefix": secret[:16],
            "owner": new.owner,
            "models": new.models,
            "rpm": new.rpm,
            "tpm": new.tpm,
            "budget_usd": new.budget_usd,
            "budget_period": new.budget_period or ("month" if new.budget_usd is not None else None),
            "max_running": new.max_running,
            "max_streams": new.max_streams,
            "created_at": datetime.now(UTC),
        }
        async with self._engine.begin() as connection:
            await connection.execute(api_keys.insert().values(**row))
        return CreatedKey(key=secret, **_info(row))

    async def list_keys(self) -> list[KeyInfo]:
        async with self._engine.connect() as connection:
            rows = (
                (await connection.execute(sa.select(api_keys).where(api_keys.c.revoked_at.is_(None)).order_by(api_keys.c.created_at)))
                .mappings()
                .all()
            )
        return [KeyInfo(**_info(dict(row))) for row in rows]

    async def set_owner_limits(self, owner: str, limits: OwnerLimits) -> OwnerInfo:
        values = {"rpm": limits.rpm, "tpm": limits.tpm, "updated_at": datetime.now(UTC)}
        async with self._engine.begin() as connection:
            updated = await connection.execute(owner_limits.update().where(owner_limits.c.owner == owner).values(**values))
            if not updated.rowcount:
                await connection.execute(owner_limits.insert().values(owner=owner, **values))
        return OwnerInfo(owner=owner, rpm=limits.rpm, tpm=limits.tpm)

    async def owners(self) -> list[OwnerInfo]:
        async with self._engine.connect() as connection:
            rows = (await connection.execute(sa.select(owner_limits).order_by(owner_limits.c.owner))).all()
        return [OwnerInfo(owner=row.owner, rpm=row.rpm, tpm=row.tpm) for row in rows]

    async def revoke(self, key_id: str) -> bool:
        async with self._engine.begin() as connection:
            result = await connection.execute(
                api_keys.update().where(api_keys.c.id == key_id, api_keys.c.revoked_at.is_(None)).values(revoked_at=datetime.now(UTC))
            )
        return bool(result.rowcount)


def _remember(cache: OrderedDict[str, Any], digest: str, value: Any) -> None:
    cache[digest] = value
    cache.move_to_end(digest)
    if len(cache) > CACHE_BOUND:
        cache.popitem(last=False)


def _info(row: dict[str, Any]) -> dict[str, Any]:
    created: datetime = row["created_at"]
    if created.tzinfo is None:
        created = created.replace(tzinfo=UTC)
    return {
        "id": row["id"], "owner": row["owner"], "prefix": row["prefix"], "models": row["models"], "rpm": row["rpm"], "tpm": row["tpm"],
        "budget_usd": row["budget_usd"], "budget_period": row["budget_period"], "max_running": row["max_running"],
        "max_streams": row["max_streams"], "created_at": created.isoformat().replace("+00:00", "Z"),
    }  # fmt: skip
