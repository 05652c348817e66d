"""The AsyncAPI document of the streams, beside the OpenAPI one at /schema."""

from __future__ import annotations

from litestar import get

from chatbot_contracts import asyncapi

from .auth import PUBLIC

_DOCUMENT = asyncapi.document()


@get("/schema/asyncapi.json", opt=PUBLIC, sync_to_thread=False, include_in_schema=False)
def asyncapi_document() -> dict[str, object]:
    """The AsyncAPI document of the Redis streams between the services (built from the contracts)."""
    return _DOCUMENT
