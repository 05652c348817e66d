"""The OpenAI adapter against the fake upstream: text, usage, and every failure class it can meet."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import httpx
import pytest

from chatbot_contracts import ChatRequest, Delta, Done, ModelSpec, TokenUsage
from chatbot_devtools.fakes import FakeOpenAI, Fault, tokenize
from chatbot_inference.providers import OpenAIProvider, ProviderError
from chatbot_inference.providers.openai import ChunkReader

REPLY = "The quick brown fox jumps over the lazy dog."


@pytest.fixture
def collect(new_request: Callable[..., ChatRequest], spec_for: Callable[..., ModelSpec]) -> Callable[..., Awaitable[list[object]]]:
    """Every event one provider call yields."""

    async def run(provider: OpenAIProvider, fake: FakeOpenAI, **spec: object) -> list[object]:
        return [event async for event in provider.stream(new_request(), spec_for(fake, **spec))]

    return run


async def test_streams_the_exact_text_then_usage_then_done(
    fake_openai: FakeOpenAI, http: httpx.AsyncClient, collect: Callable[..., Awaitable[list[object]]]
) -> None:
    fake_openai.reply = REPLY
    events = await collect(OpenAIProvider(http), fake_openai)
    assert "".join(e.text for e in events if isinstance(e, Delta)) == REPLY
    assert events[-2] == TokenUsage(input_tokens=FakeOpenAI.prompt_tokens(fake_openai.requests[0]), output_tokens=len(tokenize(REPLY)))
    assert events[-1] == Done(reason="stop")
    sent = fake_openai.requests[0]
    assert sent["stream"] is True and sent["stream_options"] == {"include_usage": True}
    assert sent["model"] == "fake-model" and sent["max_tokens"] == 100


async def test_the_api_key_comes_from_the_named_variable(
    fake_openai: FakeOpenAI, http: httpx.AsyncClient, collect: Callable[..., Awaitable[list[object]]]
) -> None:
    provider = OpenAIProvider(http, environ={"MY_KEY": "sk-upstream"})
    await collect(provider, fake_openai, api_key_env="MY_KEY")
    with pytest.raises(ProviderError) as missing:
        await collect(OpenAIProvider(http, environ={}), fake_openai, api_key_env="MY_KEY")
    assert missing.value.code == "authentication" and "MY_KEY" in missing.value.message


@pytest.mark.parametrize(
    ("fault", "code", "retry_after"),
    [
        (Fault(status=429, retry_after=3, message="Rate limit reached"), "rate_limited", 3.0),
        (Fault(status=500), "upstream_error", None),
        (Fault(status=503), "overloaded", None),
        (Fault(status=401, message="Incorrect API key"), "authentication", None),
        (Fault(status=400, message="This model's maximum context length is 8192 tokens"), "context_length_exceeded", None),
        (Fault(status=400, message="Invalid value for temperature"), "bad_request", None),
        (Fault(drop_after=3), "network", None),
        (Fault(error_after=2, message="The server had an error"), "upstream_error", None),
        (Fault(malformed_after=1), "upstream_error", None),
    ],
)
async def test_failures_are_classified(
    fake_openai: FakeOpenAI,
    http: httpx.AsyncClient,
    fault: Fault,
    code: str,
    retry_after: float | None,
    collect: Callable[..., Awaitable[list[object]]],
) -> None:
    fake_openai.reply = REPLY
    fake_openai.faults.append(fault)
    with pytest.raises(ProviderError) as caught:
        await collect(OpenAIProvider(http), fake_openai)
    assert caught.value.code == code
    assert caught.value.retry_after == retry_after
    if fault.status:
        assert fault.message in caught.value.message


async def test_an_unreachable_provider_is_a_network_error(http: httpx.AsyncClient, collect: Callable[..., Awaitable[list[object]]]) -> None:
    from chatbot_devtools.redis_server import free_port

    fake = FakeOpenAI()
    fake.base_url = f"http://127.0.0.1:{free_port()}/v1"
    with pytest.raises(ProviderError) as caught:
        await collect(OpenAIProvider(http), fake)
    assert caught.value.code == "network" and caught.value.retryable


def test_chunk_reader_reads_text_finish_and_usage() -> None:
    reader = ChunkReader()
    assert reader.read('{"choices":[{"index":0,"delta":{"role":"assistant","content":""},"finish_reason":null}]}') is None
    assert reader.read('{"choices":[{"index":0,"delta":{"content":"Hel"},"finish_reason":null}],"usage":null}') == "Hel"
    assert reader.read('{"choices":[{"index":0,"delta":{},"finish_reason":"length"}]}') is None
    reader.read(
        '{"choices":[],"usage":{"prompt_tokens":7,"completion_tokens":2,"total_tokens":9,"prompt_tokens_details":{"cached_tokens":4}}}'
    )
    assert reader.finish_reason == "length"
    assert reader.usage == TokenUsage(input_tokens=7, output_tokens=2, cached_tokens=4)


def test_chunk_reader_refuses_error_and_garbage_chunks() -> None:
    with pytest.raises(ProviderError, match="error in stream: overloaded"):
        ChunkReader().read('{"error":{"message":"overloaded","type":"server_error"}}')
    with pytest.raises(ProviderError, match="malformed chunk"):
        ChunkReader().read("{nope")
