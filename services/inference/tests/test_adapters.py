"""Every HTTP adapter against its vendor's fake: exact text and usage, each failure class, cancellation."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import aiohttp
import pytest

from chatbot_contracts import ChatMessage, ChatRequest, Delta, Done, ModelSpec, TokenUsage
from chatbot_devtools.fakes import FakeAnthropic, FakeGemini, FakeOllama, FakeOpenAI, FakeUpstream, Fault, tokenize
from chatbot_devtools.serve import ThreadedServer
from chatbot_devtools.tcp_proxy import TcpProxy
from chatbot_inference.providers import AnthropicProvider, GeminiProvider, OllamaProvider, OpenAIProvider, Provider, ProviderError
from chatbot_inference.providers.http import client_session

REPLY = "Tokens arrive one by one, and every one of them counts."


@dataclass
class Case:
    name: str
    fake: type[FakeUpstream]
    suffix: str
    adapter: Callable[[aiohttp.ClientSession], Provider]
    error_after_code: str


CASES = [
    Case("openai", FakeOpenAI, "/v1", OpenAIProvider, "upstream_error"),
    Case("anthropic", FakeAnthropic, "", AnthropicProvider, "overloaded"),
    Case("gemini", FakeGemini, "", GeminiProvider, "overloaded"),
    Case("ollama", FakeOllama, "", OllamaProvider, "upstream_error"),
]


@pytest.fixture(params=CASES, ids=[case.name for case in CASES])
def case(request: pytest.FixtureRequest) -> Case:
    return request.param  # type: ignore[no-any-return]


@pytest.fixture
def fake(case: Case) -> AsyncIterator[FakeUpstream]:
    fake = case.fake(reply=REPLY)
    server = ThreadedServer(fake).start()
    fake.base_url = server.url + case.suffix
    yield fake
    server.stop()


@pytest.fixture
def adapter(case: Case, http: aiohttp.ClientSession) -> Provider:
    return case.adapter(http)


@pytest.fixture
def call(adapter: Provider, fake: FakeUpstream, new_request: Callable[..., ChatRequest], case: Case) -> Callable[..., Awaitable[list[Any]]]:
    """Every event of one call to the fake through the adapter."""

    async def run(**request_fields: Any) -> list[Any]:
        spec = ModelSpec(provider=case.name, upstream_model="fake-model", base_url=fake.base_url, max_output_tokens=256)  # type: ignore[arg-type]
        return [event async for event in adapter.stream(new_request(**request_fields), spec)]

    return run


def text_of(events: list[Any]) -> str:
    return "".join(e.text for e in events if isinstance(e, Delta))


async def test_calls_one_after_another_reuse_one_connection(
    case: Case, fake: FakeUpstream, call: Callable[..., Awaitable[list[Any]]]
) -> None:
    """A stream read to its end marker gives its connection back to the pool (a new connection per call cost a tenth of a worker)."""
    proxy = TcpProxy().start(int(fake.base_url.rsplit(":", 1)[1].split("/")[0]))
    fake.base_url = proxy.url + case.suffix
    try:
        for _ in range(3):
            assert text_of(await call()) == REPLY
        assert proxy.accepted == 1
    finally:
        proxy.stop()


async def test_a_proxy_named_in_the_environment_carries_the_calls(
    monkeypatch: pytest.MonkeyPatch, fake_openai: FakeOpenAI, new_request: Callable[..., ChatRequest]
) -> None:
    """Behind a corporate proxy (`HTTP_PROXY`), provider calls go through it."""
    fake_openai.reply = "Through the proxy."
    proxy = TcpProxy().start(int(fake_openai.base_url.rsplit(":", 1)[1].split("/")[0]))
    monkeypatch.setenv("HTTP_PROXY", proxy.url)
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    spec = ModelSpec(provider="openai", upstream_model="fake-model", base_url="http://provider.invalid/v1", max_output_tokens=256)
    try:
        async with client_session(connect_timeout_s=5.0) as session:
            events = [event async for event in OpenAIProvider(session).stream(new_request(), spec)]
        assert text_of(events) == "Through the proxy." and proxy.accepted == 1, "the host is unknown: only the proxy could answer"
    finally:
        proxy.stop()


async def test_exact_text_then_reported_usage_then_done(call: Callable[..., Awaitable[list[Any]]], fake: FakeUpstream) -> None:
    messages = [ChatMessage(role="system", content="Be terse."), ChatMessage(role="user", content="Why count tokens?")]
    events = await call(messages=messages)
    assert text_of(events) == REPLY
    assert events[-2] == TokenUsage(input_tokens=fake.prompt_tokens(fake.requests[0]), output_tokens=len(tokenize(REPLY)))  # type: ignore[attr-defined]
    assert events[-1] == Done(reason="stop")


@pytest.mark.parametrize(
    ("fault", "code"),
    [
        (Fault(status=429, retry_after=3, message="slow down please"), "rate_limited"),
        (Fault(status=500, message="boom"), "upstream_error"),
        (Fault(status=503, message="busy"), "overloaded"),
        (Fault(status=401, message="bad key"), "authentication"),
        (Fault(status=400, message="prompt is too long: maximum context length exceeded"), "context_length_exceeded"),
        (Fault(drop_after=3), "network"),
        (Fault(malformed_after=2), "upstream_error"),
    ],
)
async def test_failures_are_classified(call: Callable[..., Awaitable[list[Any]]], fake: FakeUpstream, fault: Fault, code: str) -> None:
    fake.faults.append(fault)
    with pytest.raises(ProviderError) as caught:
        await call()
    assert caught.value.code == code
    if fault.status:
        assert fault.message in caught.value.message
    assert caught.value.retry_after == fault.retry_after


async def test_an_error_inside_a_200_stream_is_an_error(call: Callable[..., Awaitable[list[Any]]], fake: FakeUpstream, case: Case) -> None:
    fake.faults.append(Fault(error_after=2, message="melted down mid-answer"))
    with pytest.raises(ProviderError, match="melted down mid-answer") as caught:
        await call()
    assert caught.value.code == case.error_after_code


async def test_cancelling_the_consumer_closes_the_upstream_call(
    adapter: Provider, fake: FakeUpstream, new_request: Callable[..., ChatRequest], case: Case
) -> None:
    fake.reply = "word " * 200
    fake.token_delay_s = 0.02
    spec = ModelSpec(provider=case.name, upstream_model="fake-model", base_url=fake.base_url)  # type: ignore[arg-type]
    received: list[str] = []
    enough = asyncio.Event()

    async def consume() -> None:
        async for event in adapter.stream(new_request(), spec):
            if isinstance(event, Delta):
                received.append(event.text)
                if len(received) == 3:
                    enough.set()

    task = asyncio.create_task(consume())
    await enough.wait()
    task.cancel()
    cancelled_at = time.monotonic()
    with pytest.raises(asyncio.CancelledError):
        await task
    for _ in range(100):
        if fake.disconnects:
            break
        await asyncio.sleep(0.01)
    assert fake.disconnects, "the fake must see the connection close"
    assert fake.disconnects[0] - cancelled_at < 0.5


# --- What only some vendors do --------------------------------------------------------------------


async def test_anthropic_takes_the_system_prompt_top_level_and_usage_without_double_counting(
    fake_anthropic: FakeAnthropic, http: aiohttp.ClientSession, new_request: Callable[..., ChatRequest]
) -> None:
    fake_anthropic.reply = REPLY
    fake_anthropic.cache_read_tokens = 3
    spec = ModelSpec(
        provider="anthropic", upstream_model="claude-fake", base_url=fake_anthropic.base_url, api_key_env="K", max_output_tokens=99
    )
    messages = [
        ChatMessage(role="system", content="Be terse."),
        ChatMessage(role="user", content="One."),
        ChatMessage(role="user", content="Two."),
        ChatMessage(role="assistant", content="Yes?"),
        ChatMessage(role="user", content="Three."),
    ]
    events = [e async for e in AnthropicProvider(http, environ={"K": "sk-ant"}).stream(new_request(messages=messages), spec)]
    sent, headers = fake_anthropic.requests[0], fake_anthropic.headers[0]
    assert sent["system"] == "Be terse." and sent["max_tokens"] == 99
    assert sent["messages"] == [
        {"role": "user", "content": "One.\n\nTwo."},
        {"role": "assistant", "content": "Yes?"},
        {"role": "user", "content": "Three."},
    ]
    assert headers["x-api-key"] == "sk-ant" and headers["anthropic-version"] == "2023-06-01"
    usage = events[-2]
    assert usage == TokenUsage(input_tokens=fake_anthropic.prompt_tokens(sent), output_tokens=len(tokenize(REPLY)), cached_tokens=3)


async def test_anthropic_refusal_and_gemini_safety_stop_as_content_filter(
    fake_anthropic: FakeAnthropic, fake_gemini: FakeGemini, http: aiohttp.ClientSession, new_request: Callable[..., ChatRequest]
) -> None:
    for provider, fake in ((AnthropicProvider(http), fake_anthropic), (GeminiProvider(http), fake_gemini)):
        fake.reply = REPLY
        fake.faults.append(Fault(filtered_after=2))
        spec = ModelSpec(provider=provider.name, upstream_model="m", base_url=fake.base_url)  # type: ignore[arg-type]
        events = [e async for e in provider.stream(new_request(), spec)]
        assert text_of(events) == "".join(tokenize(REPLY)[:2])
        assert events[-1] == Done(reason="content_filter")


async def test_gemini_maps_roles_and_a_blocked_prompt(
    fake_gemini: FakeGemini, http: aiohttp.ClientSession, new_request: Callable[..., ChatRequest]
) -> None:
    spec = ModelSpec(provider="gemini", upstream_model="gemini-fake", base_url=fake_gemini.base_url, api_key_env="G")
    messages = [
        ChatMessage(role="system", content="Be terse."),
        ChatMessage(role="user", content="Hi"),
        ChatMessage(role="assistant", content="Hello"),
        ChatMessage(role="user", content="Again"),
    ]
    provider = GeminiProvider(http, environ={"G": "gm-key"})
    await _drain(provider.stream(new_request(messages=messages, params={"temperature": 0.2, "stop": ["END"]}), spec))
    sent = fake_gemini.requests[0]
    assert sent["systemInstruction"] == {"parts": [{"text": "Be terse."}]}
    assert [c["role"] for c in sent["contents"]] == ["user", "model", "user"]
    assert sent["generationConfig"] == {"temperature": 0.2, "maxOutputTokens": 4096, "stopSequences": ["END"]}
    assert fake_gemini.headers[0]["x-goog-api-key"] == "gm-key"
    fake_gemini.block_prompt = True
    events = [e async for e in provider.stream(new_request(), spec)]
    assert text_of(events) == "" and events[-1] == Done(reason="content_filter")


async def test_gemini_says_an_invalid_key_is_an_authentication_failure(
    fake_gemini: FakeGemini, http: aiohttp.ClientSession, new_request: Callable[..., ChatRequest]
) -> None:
    fake_gemini.faults.append(Fault(status=400, message="API key not valid. Please pass a valid API key."))
    spec = ModelSpec(provider="gemini", upstream_model="m", base_url=fake_gemini.base_url)
    with pytest.raises(ProviderError) as caught:
        await _drain(GeminiProvider(http).stream(new_request(), spec))
    assert caught.value.code == "authentication"


async def test_ollama_sends_options(fake_ollama: FakeOllama, http: aiohttp.ClientSession, new_request: Callable[..., ChatRequest]) -> None:
    spec = ModelSpec(provider="ollama", upstream_model="llama-fake:latest", base_url=fake_ollama.base_url, max_output_tokens=64)
    await _drain(OllamaProvider(http).stream(new_request(params={"temperature": 0.3, "seed": 5, "max_tokens": 500}), spec))
    assert fake_ollama.requests[0]["options"] == {"temperature": 0.3, "seed": 5, "num_predict": 64}
    assert fake_ollama.requests[0]["stream"] is True


async def _drain(events: AsyncIterator[Any]) -> None:
    async for _ in events:
        pass
