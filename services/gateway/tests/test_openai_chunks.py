"""The OpenAI stream's chunks, as bytes: a text chunk cut from a template is the chunk msgspec would encode."""

from __future__ import annotations

import msgspec
import pytest

from chatbot_contracts import Delta, Done, Restart, Started
from chatbot_gateway.openai.routes import _Completion
from chatbot_gateway.openai.schemas import ChatCompletionChunk, ChunkChoice, ChunkDelta


def _expected(model: str, text: str) -> bytes:
    chunk = ChatCompletionChunk(id="chatcmpl-r1", created=7, model=model, choices=[ChunkChoice(delta=ChunkDelta(content=text))])
    return b"data: " + msgspec.json.encode(chunk) + b"\n\n"


@pytest.mark.parametrize("text", ["tok ", 'a "quoted" \\ line\n', "café ✓ 🙂", "\u0000marker\u0000", "\x1f\t"])
def test_a_text_chunk_is_the_encoded_chunk(text: str) -> None:
    completion = _Completion("r1", 7, "alias")
    body, last = completion._render(
        [(b"1-0", Started(model="model-a", provider="openai")), (b"1-1", Delta(text=text))], include_usage=False
    )
    _, chunk = body.split(b"\n\n", 1)
    assert not last and chunk == _expected("model-a", text)
    # The model named by a later `started` (a retry on a fallback model) is in the chunks after it.
    body, _ = completion._render([(b"2-0", Started(model="model-b", provider="openai")), (b"2-1", Delta(text=text))], include_usage=False)
    assert body == _expected("model-b", text)
    body, last = completion._render([(b"3-0", Done(reason="stop"))], include_usage=False)
    assert last and body.endswith(b"data: [DONE]\n\n")


def test_a_restart_ends_the_stream_only_after_text_was_sent() -> None:
    """OpenAI's protocol cannot take back text on the wire: a restart after some ends the stream with an error that says
    so; one before any is invisible (the answer starts over)."""
    completion = _Completion("r1", 7, "alias")
    body, last = completion._render([(b"1-0", Started(model="m", provider="openai")), (b"1-1", Restart(attempt=2))], include_usage=False)
    assert not last and b"error" not in body
    body, last = completion._render([(b"2-0", Delta(text="Hello"))], include_usage=False)
    assert not last and b"Hello" in body
    body, last = completion._render([(b"3-0", Restart(attempt=3)), (b"3-1", Delta(text="Hello again"))], include_usage=False)
    assert last and b"the generation restarted after text was sent" in body and b"Hello again" not in body
