"""Images in messages, as every API of the gateway takes them: checked once here, carried as `ImagePart`s.

An image is an `https://` URL (the provider fetches it) or a `data:` URL with base64 content, whose bytes must be
one of the formats every vision model reads (PNG, JPEG, GIF, WebP) and no larger than the gateway allows.
"""

from __future__ import annotations

import binascii
from base64 import b64decode

from chatbot_contracts import ImagePart

from .errors import BadRequest, Unprocessable

MEDIA_TYPES = {"image/png": b"\x89PNG\r\n\x1a\n", "image/jpeg": b"\xff\xd8\xff", "image/gif": b"GIF8", "image/webp": b"RIFF"}
"""What each accepted format's bytes begin with (WebP: a RIFF container)."""


class ImageRules:
    """The gateway's bounds on images (`CHATBOT_MAX_IMAGE_BYTES`, `CHATBOT_MAX_IMAGES`)."""

    def __init__(self, max_bytes: int, max_count: int) -> None:
        self.max_bytes = max_bytes
        self.max_count = max_count

    def part(self, url: str, where: str, detail: str | None = None) -> ImagePart:
        """An image of the request at `where` (`messages[1].content[2]`), checked; a 400 or 422 that says what is wrong."""
        if url.startswith("https://"):
            if len(url) > 8192:
                raise BadRequest(f"the image URL at $.{where} is longer than 8192 characters", param=where)
            return ImagePart(url=url, detail=detail)
        if not url.startswith("data:"):
            raise BadRequest(f"the image at $.{where} must be an https:// URL or a data: URL", param=where)
        header, comma, data = url.partition(",")
        media_type = header.removeprefix("data:").removesuffix(";base64")
        if not comma or not header.endswith(";base64"):
            raise BadRequest(f"the data: URL at $.{where} must be base64 (data:<type>;base64,<data>)", param=where)
        return self.inline(media_type, data, where, detail)

    def inline(self, media_type: str, data: str, where: str, detail: str | None = None) -> ImagePart:
        """An image given as base64 data and its media type (Anthropic's `source`), checked."""
        if media_type not in MEDIA_TYPES:
            accepted = ", ".join(MEDIA_TYPES)
            raise BadRequest(f"the image at $.{where} is {media_type or 'of no type'}; accepted: {accepted}", param=where)
        if len(data) * 3 // 4 > self.max_bytes:
            raise Unprocessable(f"the image at $.{where} is larger than {self.max_bytes} bytes", param=where)
        try:
            head = b64decode(data[:64], validate=True)
            b64decode(data, validate=True)
        except (binascii.Error, ValueError) as exc:
            raise BadRequest(f"the image at $.{where} is not valid base64", param=where) from exc
        if not head.startswith(MEDIA_TYPES[media_type]):
            raise BadRequest(f"the image at $.{where} says {media_type}, but its bytes are not", param=where)
        return ImagePart(url=f"data:{media_type};base64,{data}", detail=detail)
