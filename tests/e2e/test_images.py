"""Images in messages through the OpenAI, Anthropic and Responses APIs, reaching each provider in its own form;
what a provider cannot take, or what is too large, malformed or too many, refused with the place named."""

from __future__ import annotations

import base64
import struct
import zlib
from collections.abc import Callable
from typing import Any

import anthropic
import httpx
import openai
import pytest

from chatbot_devtools.fakes import FakeAnthropic, FakeGemini, FakeOllama, FakeOpenAI
from chatbot_devtools.fakes.base import FakeUpstream
from chatbot_devtools.platform import LocalPlatform, every_provider, registry_toml

pytestmark = pytest.mark.e2e


def png(width: int = 1, height: int = 1) -> bytes:
    """A real PNG image (grey pixels)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    rows = b"".join(b"\x00" + b"\x80" * width for _ in range(height))
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b"")


DATA = base64.b64encode(png()).decode()
DATA_URL = f"data:image/png;base64,{DATA}"
HTTPS_URL = "https://images.example.com/cat.png"


@pytest.fixture
def stack(
    platform_factory: Callable[..., LocalPlatform],
    fake_openai: FakeOpenAI,
    fake_anthropic: FakeAnthropic,
    fake_gemini: FakeGemini,
    fake_ollama: FakeOllama,
) -> tuple[str, LocalPlatform, dict[str, FakeUpstream]]:
    registry = registry_toml(every_provider(fake_openai, fake_anthropic, fake_gemini, fake_ollama))
    platform = platform_factory(registry)
    platform.env |= {"CHATBOT_MAX_IMAGES": "2", "CHATBOT_MAX_IMAGE_BYTES": "4096"}
    url = platform.start_gateway()
    platform.start_worker(CHATBOT_PROVIDER_RETRIES="0")
    platform.wait_ready(url)
    fakes: dict[str, FakeUpstream] = {"gpt": fake_openai, "claude": fake_anthropic, "gemini": fake_gemini, "llama": fake_ollama}
    for fake in fakes.values():
        fake.reply = "A grey square. "
    return url, platform, fakes


def _shown(alias: str, sent: dict[str, Any], url: str) -> None:
    """The image reached the provider in its own form, after the text."""
    inline = url.startswith("data:")
    match alias:
        case "gpt":
            assert sent["messages"][-1]["content"] == [
                {"type": "text", "text": "What is this?"},
                {"type": "image_url", "image_url": {"url": url, "detail": "low"}},
            ]
        case "claude":
            source = {"type": "base64", "media_type": "image/png", "data": DATA} if inline else {"type": "url", "url": url}
            assert sent["messages"][-1]["content"] == [{"type": "text", "text": "What is this?"}, {"type": "image", "source": source}]
        case "gemini":
            image = (
                {"inlineData": {"mimeType": "image/png", "data": DATA}}
                if inline
                else {"fileData": {"mimeType": "image/png", "fileUri": url}}
            )
            assert sent["contents"][-1]["parts"] == [{"text": "What is this?"}, image]
        case "llama":
            assert sent["messages"][-1]["images"] == [DATA] and sent["messages"][-1]["content"] == "What is this?"


@pytest.mark.parametrize("alias", ["gpt", "claude", "gemini", "llama"])
def test_the_openai_sdk_shows_an_image_to_every_provider(stack: tuple[str, LocalPlatform, dict[str, FakeUpstream]], alias: str) -> None:
    url, platform, fakes = stack
    sdk = openai.OpenAI(base_url=f"{url}/v1", api_key=platform.admin_key, max_retries=0, timeout=30)
    urls = [DATA_URL] if alias == "llama" else [DATA_URL, HTTPS_URL]
    for image in urls:
        content: Any = [{"type": "text", "text": "What is this?"}, {"type": "image_url", "image_url": {"url": image, "detail": "low"}}]
        answer = sdk.chat.completions.create(model=alias, messages=[{"role": "user", "content": content}])
        assert answer.choices[0].message.content == "A grey square. "
        _shown(alias, fakes[alias].requests[-1], image)


def test_the_anthropic_sdk_and_the_responses_api_show_images_to_other_providers(
    stack: tuple[str, LocalPlatform, dict[str, FakeUpstream]],
) -> None:
    url, platform, fakes = stack
    claude = anthropic.Anthropic(base_url=url, api_key=platform.admin_key, max_retries=0, timeout=30)
    block: Any = {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": DATA}}
    with claude.messages.stream(
        model="gemini", max_tokens=50, messages=[{"role": "user", "content": [{"type": "text", "text": "What is this?"}, block]}]
    ) as stream:
        assert "".join(stream.text_stream) == "A grey square. "
    _shown("gemini", fakes["gemini"].requests[-1], DATA_URL)

    sdk = openai.OpenAI(base_url=f"{url}/v1", api_key=platform.admin_key, max_retries=0, timeout=30)
    parts: Any = [{"type": "input_text", "text": "What is this?"}, {"type": "input_image", "image_url": HTTPS_URL, "detail": "auto"}]
    response = sdk.responses.create(model="claude", input=[{"role": "user", "content": parts}])
    assert response.output_text == "A grey square. "
    _shown("claude", fakes["claude"].requests[-1], HTTPS_URL)


def test_images_that_cannot_be_shown_are_refused_by_place(stack: tuple[str, LocalPlatform, dict[str, FakeUpstream]]) -> None:
    url, platform, fakes = stack
    headers = {"Authorization": f"Bearer {platform.admin_key}"}
    big = base64.b64encode(png(1, 1) + b"\x00" * 5000).decode()
    huge = base64.b64encode(png(1, 1) + b"\x00" * 4_000_000).decode()
    jpeg_claim = f"data:image/jpeg;base64,{DATA}"

    def ask(model: str, *images: str) -> httpx.Response:
        content = [{"type": "text", "text": "What is this?"}, *({"type": "image_url", "image_url": {"url": u}} for u in images)]
        body = {"model": model, "messages": [{"role": "user", "content": content}]}
        return httpx.post(f"{url}/v1/chat/completions", json=body, headers=headers, timeout=30)

    cases = [
        (ask("gpt", f"data:image/png;base64,{huge}"), 413, None),
        (ask("gpt", f"data:image/png;base64,{big}"), 422, "messages[0].content[1].image_url.url"),
        (ask("gpt", jpeg_claim), 400, "messages[0].content[1].image_url.url"),
        (ask("gpt", "data:image/svg+xml;base64,PHN2Zz4="), 400, "messages[0].content[1].image_url.url"),
        (ask("gpt", "http://insecure.example.com/a.png"), 400, "messages[0].content[1].image_url.url"),
        (ask("gpt", DATA_URL, DATA_URL, DATA_URL), 422, "messages"),
        (ask("local", DATA_URL), 400, "messages"),
        (ask("llama", HTTPS_URL), 400, "messages"),
    ]
    for response, status, param in cases:
        assert response.status_code == status, response.text
        if param is not None:
            assert response.json()["error"]["param"] == param, response.text
    assert all(not fake.requests for fake in fakes.values()), "nothing refused reaches a provider"


def test_a_conversation_keeps_its_images_and_shows_them_again(
    platform_factory: Callable[..., LocalPlatform], fake_openai: FakeOpenAI
) -> None:
    from httpx_sse import connect_sse

    from chatbot_devtools.platform import create_key

    fake_openai.reply = "A grey square. "
    platform = platform_factory(
        registry_toml({"gpt": {"provider": "openai", "upstream_model": "gpt-fake", "base_url": fake_openai.base_url}})
    )
    platform.start_conversation()
    url = platform.start_gateway()
    platform.start_worker()
    platform.wait_ready(url)
    api = httpx.Client(base_url=url, headers={"Authorization": f"Bearer {platform.admin_key}"}, timeout=30)
    conversation = api.post("/api/v1/conversations", json={}).json()
    path = f"/api/v1/conversations/{conversation['id']}"

    def turn(body: dict[str, Any]) -> list[str]:
        with connect_sse(api, "POST", f"{path}/messages", json=body) as source:
            assert source.response.status_code == 200, source.response.read()
            return [event.event for event in source.iter_sse()]

    assert turn({"content": "What is this?", "images": [{"url": DATA_URL}, {"url": HTTPS_URL}]})[-1] == "done"
    sent = fake_openai.requests[-1]["messages"][-1]["content"]
    assert [part["type"] for part in sent] == ["text", "image_url", "image_url"]
    assert [part["image_url"]["url"] for part in sent[1:]] == [DATA_URL, HTTPS_URL]

    stored = api.get(path).json()
    [question] = [m for m in stored["messages"] if m["role"] == "user"]
    kept, linked = question["attachments"]
    assert (kept["media_type"], kept["size"], kept["url"]) == ("image/png", len(png()), None)
    assert linked["url"] == HTTPS_URL
    image = api.get(f"{path}/attachments/{kept['id']}")
    assert image.status_code == 200 and image.content == png() and image.headers["content-type"] == "image/png"
    assert image.headers["x-content-type-options"] == "nosniff"

    assert turn({"content": "And its colour?"})[-1] == "done"
    context = fake_openai.requests[-1]["messages"]
    assert context[0]["content"][1]["image_url"]["url"] == DATA_URL, "the image is shown again with the turn it came with"

    share = api.post(f"{path}/share").json()
    token = share["url"].rsplit("/", 1)[1]
    shown = httpx.get(f"{url}/api/v1/shared/{token}").json()["messages"][0]["attachments"]
    assert [a["id"] for a in shown] == [kept["id"], linked["id"]]
    public = httpx.get(f"{url}/api/v1/shared/{token}/attachments/{kept['id']}")
    assert public.status_code == 200 and public.content == png(), "a shared conversation's images need no key"
    assert httpx.get(f"{url}/api/v1/shared/{token}/attachments/{linked['id']}").status_code == 404, "a linked image is not served"
    assert api.delete(f"{path}/share").status_code == 204
    assert httpx.get(f"{url}/api/v1/shared/{token}/attachments/{kept['id']}").status_code == 404, "revoked with the link"

    stranger = create_key(url, platform.admin_key, owner="someone-else")["key"]
    assert httpx.get(f"{url}{path}/attachments/{kept['id']}", headers={"Authorization": f"Bearer {stranger}"}).status_code == 404
    bad = api.post(f"{path}/messages", json={"content": "x", "images": [{"url": "data:image/png;base64,bm90IGEgcG5n"}]})
    assert bad.status_code == 400 and bad.json()["error"]["param"] == "images[0].url"

    folder = platform.workdir / "attachments" / conversation["id"]
    assert [file.read_bytes() for file in folder.iterdir()] == [png()], "one stored image: the one sent inline"
    assert api.delete(path).status_code == 204
    assert not folder.exists(), "a deleted conversation's images are gone"
