"""The web UI: the built files of `web/` at `/`, and the UI's own pages (`/c/…`, `/usage`, `/shared/…`) as its index.html."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from litestar import Response, get
from litestar.response import File
from litestar.static_files import create_static_files_router

from .auth import PUBLIC

CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data: blob:; "
    "connect-src 'self'; object-src 'none'; base-uri 'self'; form-action 'self'; frame-ancestors 'none'"
)
"""The UI loads nothing from elsewhere; inline styles are the charts' (attributes, not scripts); `blob:` images are the
conversations' own, fetched with the key."""

PAGES = ["/c/{conversation_id:str}", "/usage", "/knowledge", "/shared/{token:str}"]
"""Addresses the UI routes in the browser; a reload or a shared link must land on the UI."""


def _with_policy(response: Response[Any]) -> Response[Any]:
    response.headers["Content-Security-Policy"] = CONTENT_SECURITY_POLICY
    return response


def web_routes(dist: Path) -> list[object]:
    """The routes that serve the UI built into `dist` (nothing when it has not been built)."""
    index = dist / "index.html"
    if not index.is_file():
        return []

    @get(PAGES, opt=PUBLIC, include_in_schema=False, media_type="text/html", sync_to_thread=False)
    def page() -> File:
        return File(
            index,
            content_disposition_type="inline",
            headers={"Content-Security-Policy": CONTENT_SECURITY_POLICY, "Cache-Control": "no-cache"},
        )

    files = create_static_files_router(
        path="/", directories=[dist], html_mode=True, include_in_schema=False, opt=PUBLIC, after_request=_with_policy
    )
    return [page, files]
