"""The fake upstream is only trusted because the official `openai` SDK reads it as it reads OpenAI."""

from __future__ import annotations

import openai
import pytest

from chatbot_devtools.fakes import FakeOpenAI, Fault, fake_vector, tokenize

REPLY = "Faithful fakes make honest tests. "


@pytest.fixture
def sdk(fake_openai: FakeOpenAI) -> openai.OpenAI:
    fake_openai.reply = REPLY
    return openai.OpenAI(base_url=fake_openai.base_url, api_key="sk-fake", max_retries=0)


def test_the_sdk_streams_the_fakes_reply_and_usage(sdk: openai.OpenAI, fake_openai: FakeOpenAI) -> None:
    chunks = list(
        sdk.chat.completions.create(
            model="fake-model", messages=[{"role": "user", "content": "Hi"}], stream=True, stream_options={"include_usage": True}
        )
    )
    assert chunks[0].choices[0].delta.role == "assistant"
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == REPLY
    assert chunks[-2].choices[0].finish_reason == "stop"
    assert chunks[-1].choices == [] and chunks[-1].usage is not None
    assert chunks[-1].usage.completion_tokens == len(tokenize(REPLY))
    assert chunks[-1].usage.prompt_tokens == FakeOpenAI.prompt_tokens(fake_openai.requests[0])


def test_the_sdk_reads_a_whole_completion(sdk: openai.OpenAI) -> None:
    completion = sdk.chat.completions.create(model="fake-model", messages=[{"role": "user", "content": "Hi"}])
    assert completion.choices[0].message.content == REPLY
    assert (
        completion.usage is not None
        and completion.usage.total_tokens == completion.usage.prompt_tokens + completion.usage.completion_tokens
    )


def test_the_sdk_sees_a_rate_limit_with_its_retry_after(sdk: openai.OpenAI, fake_openai: FakeOpenAI) -> None:
    fake_openai.faults.append(Fault(status=429, retry_after=7, message="Rate limit reached"))
    with pytest.raises(openai.RateLimitError) as caught:
        sdk.chat.completions.create(model="fake-model", messages=[{"role": "user", "content": "Hi"}])
    assert caught.value.response.headers["retry-after"] == "7"
    assert "Rate limit reached" in caught.value.message


def test_the_sdk_raises_on_an_error_chunk_mid_stream(sdk: openai.OpenAI, fake_openai: FakeOpenAI) -> None:
    fake_openai.faults.append(Fault(error_after=1, message="The server had an error"))
    with pytest.raises(openai.APIError, match="The server had an error"):
        list(sdk.chat.completions.create(model="fake-model", messages=[{"role": "user", "content": "Hi"}], stream=True))


def test_tokens_join_back_into_the_text() -> None:
    for text in ["", "one", "  leading and trailing  ", "line\nbreaks\n\nand\ttabs", "ünïcödé 🚀 mixed"]:
        assert "".join(tokenize(text)) == text


TOOLS = [
    {"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}}
]


def test_the_sdk_assembles_a_streamed_tool_call(sdk: openai.OpenAI, fake_openai: FakeOpenAI) -> None:
    fake_openai.tool_call = ("get_weather", '{"city": "Paris"}')
    with sdk.chat.completions.stream(model="fake-model", messages=[{"role": "user", "content": "Weather?"}], tools=TOOLS) as stream:  # type: ignore[arg-type]
        final = stream.get_final_completion()
    [call] = final.choices[0].message.tool_calls or []
    assert call.function.name == "get_weather" and call.function.arguments == '{"city": "Paris"}'
    assert final.choices[0].finish_reason == "tool_calls"
    whole = sdk.chat.completions.create(model="fake-model", messages=[{"role": "user", "content": "Weather?"}], tools=TOOLS)  # type: ignore[arg-type]
    assert (whole.choices[0].message.tool_calls or [])[0].function.arguments == '{"city": "Paris"}'


def test_the_sdk_reads_embeddings_as_base64_and_as_floats(sdk: openai.OpenAI, fake_openai: FakeOpenAI) -> None:
    texts = ["first text", "second text"]
    packed = sdk.embeddings.create(model="fake-embed", input=texts, dimensions=16)
    assert fake_openai.requests[-1]["encoding_format"] == "base64", "the SDK asks for base64 unless told otherwise"
    floats = sdk.embeddings.create(model="fake-embed", input=texts, dimensions=16, encoding_format="float")
    for answer in (packed, floats):
        assert [item.index for item in answer.data] == [0, 1]
        assert [item.embedding for item in answer.data] == [fake_vector(text, 16) for text in texts]
        assert answer.usage.prompt_tokens == 4
