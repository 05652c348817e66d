"""The images shown with user messages: a row each in the database, their bytes in an attachment store.

The store is a folder (`CHATBOT_ATTACHMENTS_DIR`), a file an image under its conversation's folder, or a bucket of
any S3-compatible object store (`CHATBOT_ATTACHMENTS_S3_BUCKET`), an object an image under `<prefix><conversation>/`.
An image is written whole before its row is committed, so no row names an image that is not there (a folder's
file under a temporary name first, then renamed; an object is whole by S3's own rule). A conversation deleted
takes its images with it.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import os
import shutil
import tempfile
import uuid
from collections.abc import Iterable
from datetime import datetime
from pathlib import Path
from typing import Protocol

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from chatbot_contracts import ImagePart
from chatbot_contracts.conversations import Attachment

from .db.schema import AttachmentRow
from .settings import StoreSettings


class BlobStore(Protocol):
    """Where attachments' bytes are kept, by conversation and attachment id; `open` before use, `close` after."""

    async def open(self) -> None: ...

    async def close(self) -> None: ...

    async def put(self, conversation_id: str, attachment_id: str, data: bytes) -> None: ...

    async def get(self, conversation_id: str, attachment_id: str) -> bytes | None: ...

    async def drop(self, conversation_id: str) -> None: ...

    async def remove(self, conversation_id: str, attachment_id: str) -> None: ...


def checked(*ids: str) -> None:
    if not all(part.isalnum() for part in ids):
        raise ValueError("ids of stored attachments are alphanumeric")


class FolderStore:
    """A folder on a disk every replica of the conversation service reaches; the file system's work in a thread."""

    def __init__(self, root: Path) -> None:
        self.root = root

    async def open(self) -> None:
        """Nothing to open: the folder is made with its first file."""

    async def close(self) -> None:
        """Nothing to close."""

    def _path(self, conversation_id: str, attachment_id: str) -> Path:
        checked(conversation_id, attachment_id)
        return self.root / conversation_id / attachment_id

    async def put(self, conversation_id: str, attachment_id: str, data: bytes) -> None:
        await asyncio.to_thread(self._write, self._path(conversation_id, attachment_id), data)

    async def get(self, conversation_id: str, attachment_id: str) -> bytes | None:
        """The attachment's bytes; None when it is not there."""
        try:
            return await asyncio.to_thread(self._path(conversation_id, attachment_id).read_bytes)
        except FileNotFoundError:
            return None

    async def drop(self, conversation_id: str) -> None:
        """Remove every attachment of a conversation."""
        checked(conversation_id)
        await asyncio.to_thread(shutil.rmtree, self.root / conversation_id, True)

    async def remove(self, conversation_id: str, attachment_id: str) -> None:
        """Remove one attachment (nothing when it is not there)."""
        await asyncio.to_thread(self._path(conversation_id, attachment_id).unlink, True)

    @staticmethod
    def _write(path: Path, data: bytes) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=".incoming-")
        try:
            with os.fdopen(handle, "wb") as file:
                file.write(data)
            os.replace(temporary, path)
        except BaseException:
            Path(temporary).unlink(missing_ok=True)
            raise


def blob_store(settings: StoreSettings) -> BlobStore:
    """The attachment store the settings name: an S3-compatible bucket, or else a folder. botocore is imported only for
    a bucket: it adds about 16 MB to each process of the service (the API, the ingest workers)."""
    if settings.attachments_s3_bucket:
        from .s3 import S3Store

        return S3Store(
            settings.attachments_s3_bucket,
            settings.attachments_s3_prefix,
            settings.attachments_s3_endpoint or None,
            settings.attachments_s3_region or None,
        )
    return FolderStore(Path(settings.attachments_dir))


class Attachments:
    """Attachments' rows and bytes together."""

    def __init__(self, store: BlobStore) -> None:
        self.store = store

    async def keep(self, session: AsyncSession, conversation_id: str, message_id: str, images: list[ImagePart], moment: datetime) -> None:
        """Store a message's images: the bytes of inline ones now, every row in `session` (committed with the message)."""
        for position, image in enumerate(images):
            attachment_id = uuid.uuid4().hex
            if image.media_type is None:
                row = AttachmentRow(url=image.url, media_type="image", size=0, sha256=None)
            else:
                data = base64.b64decode(image.data)
                await self.store.put(conversation_id, attachment_id, data)
                row = AttachmentRow(url=None, media_type=image.media_type, size=len(data), sha256=hashlib.sha256(data).hexdigest())
            row.id, row.conversation_id, row.message_id, row.position, row.created_at = (
                attachment_id, conversation_id, message_id, position, moment,
            )  # fmt: skip
            session.add(row)

    @staticmethod
    async def rows(session: AsyncSession, conversation_id: str, message_ids: Iterable[str] | None = None) -> dict[str, list[AttachmentRow]]:
        """A conversation's attachment rows by message (of `message_ids` only, when given), in their order."""
        statement = select(AttachmentRow).where(AttachmentRow.conversation_id == conversation_id)
        if message_ids is not None:
            statement = statement.where(AttachmentRow.message_id.in_(list(message_ids)))
        by_message: dict[str, list[AttachmentRow]] = {}
        for row in (await session.scalars(statement.order_by(AttachmentRow.message_id, AttachmentRow.position))).all():
            by_message.setdefault(row.message_id, []).append(row)
        return by_message

    @staticmethod
    def described(rows: dict[str, list[AttachmentRow]]) -> dict[str, list[Attachment]]:
        return {
            message: [Attachment(id=r.id, media_type=r.media_type, size=r.size, url=r.url) for r in kept] for message, kept in rows.items()
        }

    async def parts(self, rows: list[AttachmentRow]) -> list[ImagePart]:
        """Images to show the model again: stored ones as `data:` URLs (one that went missing is left out)."""
        parts = []
        for row in rows:
            if row.url is not None:
                parts.append(ImagePart(url=row.url))
            elif (data := await self.store.get(row.conversation_id, row.id)) is not None:
                parts.append(ImagePart(url=f"data:{row.media_type};base64,{base64.b64encode(data).decode()}"))
        return parts

    async def copy(self, session: AsyncSession, source: str, target: str, new_ids: dict[str, str], moment: datetime) -> None:
        """Copy the attachments of the messages in `new_ids` (old id -> new id) to the conversation `target`."""
        for message_id, rows in (await self.rows(session, source, new_ids)).items():
            for row in rows:
                copied = AttachmentRow(
                    id=uuid.uuid4().hex, conversation_id=target, message_id=new_ids[message_id], position=row.position,
                    media_type=row.media_type, size=row.size, sha256=row.sha256, url=row.url, created_at=moment,
                )  # fmt: skip
                if row.url is None and (data := await self.store.get(source, row.id)) is not None:
                    await self.store.put(target, copied.id, data)
                session.add(copied)

    async def read(self, session: AsyncSession, conversation_id: str, attachment_id: str) -> tuple[str, bytes] | None:
        """A stored attachment's media type and bytes; None when the conversation has no such stored attachment."""
        row = await session.get(AttachmentRow, attachment_id)
        if row is None or row.conversation_id != conversation_id or row.url is not None:
            return None
        data = await self.store.get(conversation_id, attachment_id)
        return (row.media_type, data) if data is not None else None
