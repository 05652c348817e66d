"""The OpenAI adapter against the fake upstream: text, usage, and every failure class it can meet."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import aiohttp
import pytest

from chatbot_contracts import ChatRequest, Delta, ModelSpec, TokenUsage, ToolCallDelta
from chatbot_devtools.fakes import FakeOpenAI
from chatbot_inference.providers import OpenAIProvider, ProviderError
from chatbot_inference.providers.openai import ChunkReader

REPLY = "The quick brown fox jumps over the lazy dog."


@pytest.fixture
def collect(new_request: Callable[..., ChatRequest], spec_for: Callable[..., ModelSpec]) -> Callable[..., Awaitable[list[object]]]:
    """Every event one provider call yields."""

    async def run(provider: OpenAIProvider, fake: FakeOpenAI, **spec: object) -> list[object]:
        return [event async for event in provider.stream(new_request(), spec_for(fake, **spec))]

    return run


async def test_the_api_key_comes_from_the_named_variable(
    fake_openai: FakeOpenAI, http: aiohttp.ClientSession, collect: Callable[..., Awaitable[list[object]]]
) -> None:
    provider = OpenAIProvider(http, environ={"MY_KEY": "sk-upstream"})
    await collect(provider, fake_openai, api_key_env="MY_KEY")
    with pytest.raises(ProviderError) as missing:
        await collect(OpenAIProvider(http, environ={}), fake_openai, api_key_env="MY_KEY")
    assert missing.value.code == "authentication" and "MY_KEY" in missing.value.message


def test_chunk_reader_reads_text_finish_and_usage() -> None:
    reader = ChunkReader()
    assert reader.read('{"choices":[{"index":0,"delta":{"role":"assistant","content":""},"finish_reason":null}]}') == []
    assert reader.read('{"choices":[{"index":0,"delta":{"content":"Hel"},"finish_reason":null}],"usage":null}') == [Delta(text="Hel")]
    assert reader.read('{"choices":[{"index":0,"delta":{},"finish_reason":"length"}]}') == []
    reader.read(
        '{"choices":[],"usage":{"prompt_tokens":7,"completion_tokens":2,"total_tokens":9,"prompt_tokens_details":{"cached_tokens":4}}}'
    )
    assert reader.finish_reason == "length"
    assert reader.usage == TokenUsage(input_tokens=7, output_tokens=2, cached_tokens=4)


def test_chunk_reader_reads_tool_call_pieces() -> None:
    reader = ChunkReader()
    first = '{"choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"id":"call_1","type":"function","function":{"name":"get_weather","arguments":""}}]}}]}'
    more = '{"choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"function":{"arguments":"{\\"city\\":"}}]}}]}'
    assert reader.read(first) == [ToolCallDelta(index=0, id="call_1", name="get_weather", arguments="")]
    assert reader.read(more) == [ToolCallDelta(index=0, arguments='{"city":')]
    reader.read('{"choices":[{"index":0,"delta":{},"finish_reason":"tool_calls"}]}')
    assert reader.finish_reason == "tool_calls"


def test_chunk_reader_refuses_error_and_garbage_chunks() -> None:
    with pytest.raises(ProviderError, match="error in stream: overloaded"):
        ChunkReader().read('{"error":{"message":"overloaded","type":"server_error"}}')
    with pytest.raises(ProviderError, match="malformed chunk"):
        ChunkReader().read("{nope")
