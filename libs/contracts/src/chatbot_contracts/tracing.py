"""W3C trace context carried in every message, so one trace follows a turn across processes."""

from __future__ import annotations

import re
import secrets

_TRACEPARENT = re.compile(r"^00-(?!0{32})[0-9a-f]{32}-(?!0{16})[0-9a-f]{16}-[0-9a-f]{2}$")


def traceparent_or_new(header: str | None) -> str:
    """The caller's `traceparent` when it is valid W3C trace context, else the start of a new trace."""
    if header and _TRACEPARENT.match(header.strip()):
        return header.strip()
    return f"00-{secrets.token_hex(16)}-{secrets.token_hex(8)}-01"
