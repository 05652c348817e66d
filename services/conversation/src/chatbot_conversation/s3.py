"""Attachments in a bucket of an S3-compatible object store (`CHATBOT_ATTACHMENTS_S3_BUCKET`); see `attachments`."""

from __future__ import annotations

from contextlib import AsyncExitStack
from typing import Any

from aiobotocore.session import get_session
from botocore.exceptions import ClientError

from .attachments import checked


class S3Store:
    """A bucket of an S3-compatible object store, through botocore's asynchronous client (aiobotocore). Credentials
    come as botocore finds them (`AWS_ACCESS_KEY_ID`/`AWS_SECRET_ACCESS_KEY`, a profile, an instance role)."""

    def __init__(self, bucket: str, prefix: str = "", endpoint_url: str | None = None, region: str | None = None) -> None:
        self.bucket = bucket
        self.prefix = prefix
        self._endpoint_url = endpoint_url
        self._region = region
        self._stack = AsyncExitStack()
        self._client: Any = None

    async def open(self) -> None:
        """Make the client (its connections are kept until `close`)."""
        creating = get_session().create_client("s3", endpoint_url=self._endpoint_url, region_name=self._region)
        self._client = await self._stack.enter_async_context(creating)

    async def close(self) -> None:
        await self._stack.aclose()
        self._client = None

    def _key(self, conversation_id: str, attachment_id: str = "") -> str:
        checked(conversation_id, *([attachment_id] if attachment_id else []))
        return f"{self.prefix}{conversation_id}/{attachment_id}"

    async def put(self, conversation_id: str, attachment_id: str, data: bytes) -> None:
        await self._client.put_object(Bucket=self.bucket, Key=self._key(conversation_id, attachment_id), Body=data)

    async def get(self, conversation_id: str, attachment_id: str) -> bytes | None:
        try:
            answer = await self._client.get_object(Bucket=self.bucket, Key=self._key(conversation_id, attachment_id))
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("NoSuchKey", "404"):
                return None
            raise
        async with answer["Body"] as body:
            data: bytes = await body.read()
        return data

    async def remove(self, conversation_id: str, attachment_id: str) -> None:
        await self._client.delete_object(Bucket=self.bucket, Key=self._key(conversation_id, attachment_id))

    async def drop(self, conversation_id: str) -> None:
        """Delete every object under the conversation's prefix, a thousand at a time (S3's bound for one call)."""
        pages = self._client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=self._key(conversation_id))
        async for page in pages:
            keys = [{"Key": item["Key"]} for item in page.get("Contents", [])]
            if keys:
                await self._client.delete_objects(Bucket=self.bucket, Delete={"Objects": keys, "Quiet": True})
