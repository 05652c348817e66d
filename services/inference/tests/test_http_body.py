"""Reading a provider's streamed body: lines and server-sent events, however the bytes are cut."""

from __future__ import annotations

from typing import Any

import pytest

from chatbot_inference.providers.http import Body


class _Arriving:
    """A response whose body arrives in the given pieces (`content.readany()` is all `Body` reads: as aiohttp's,
    it returns what has arrived, and `b""` only at the end)."""

    def __init__(self, pieces: list[bytes]) -> None:
        self._pieces = iter([piece for piece in pieces if piece])
        self.content = self

    async def readany(self) -> bytes:
        return next(self._pieces, b"")


def cut_everywhere(raw: bytes) -> list[list[bytes]]:
    """The body whole, byte by byte, and cut at every single place."""
    return [[raw], [raw[i : i + 1] for i in range(len(raw))], *([raw[:i], raw[i:]] for i in range(1, len(raw)))]


async def lines_of(pieces: list[bytes]) -> list[bytes]:
    return [line async for line in Body(_Arriving(pieces)).lines()]  # type: ignore[arg-type]


async def events_of(pieces: list[bytes]) -> list[str]:
    return [data async for data in Body(_Arriving(pieces)).events()]  # type: ignore[arg-type]


async def test_lines_end_at_lf_crlf_or_cr_wherever_the_body_is_cut() -> None:
    raw = b"one\r\ntwo\nthree\rfour\r\n\r\nlast"
    for pieces in cut_everywhere(raw):
        assert await lines_of(pieces) == [b"one", b"two", b"three", b"four", b"", b"last"], pieces


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (b'data: {"a": 1}\n\ndata: [DONE]\n\n', ['{"a": 1}', "[DONE]"]),
        (b"data: first\ndata: second\n\n", ["first\nsecond"]),  # data lines join with LF
        (b": keep-alive\n\nevent: message_start\ndata: x\nid: 7\nretry: 10\n\n", ["x"]),  # comments and other fields
        (b"data:no space\n\ndata:  two spaces\n\n", ["no space", " two spaces"]),  # only one space is dropped
        (b"data: crlf\r\n\r\ndata: cr\r\r", ["crlf", "cr"]),
        (b"data: caf\xc3\xa9 \xe2\x9c\x93\n\n", ["café ✓"]),
        (b"data: caf\xc3 or caf\xe9\n\n", ["caf\ufffd or caf\ufffd"]),  # not UTF-8: U+FFFD, as the standard decodes
        (b"data: ended\n\ndata: never ended\n", ["ended"]),  # the body ended mid-event
    ],
)
async def test_server_sent_events_as_the_html_standard_reads_them(raw: bytes, expected: list[str]) -> None:
    for pieces in cut_everywhere(raw):
        assert await events_of(pieces) == expected, pieces


async def test_a_long_event_split_over_many_reads_is_one_event() -> None:
    data = "x" * 300_000
    raw = f"data: {data}\n\n".encode()
    pieces: list[Any] = [raw[i : i + 4096] for i in range(0, len(raw), 4096)]
    assert await events_of(pieces) == [data]
