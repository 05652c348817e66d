"""The Anthropic, Gemini and Ollama fakes, read by each vendor's official SDK as it reads the real API."""

from __future__ import annotations

from typing import Any

import anthropic
import ollama
import pytest
from google import genai
from google.genai import errors as genai_errors
from google.genai import types as genai_types

from chatbot_devtools.fakes import FakeAnthropic, FakeGemini, FakeOllama, Fault, fake_vector, tokenize

REPLY = "Three vendors, three formats, one platform. "


# --- Anthropic ------------------------------------------------------------------------------------


@pytest.fixture
def claude(fake_anthropic: FakeAnthropic) -> anthropic.Anthropic:
    fake_anthropic.reply = REPLY
    return anthropic.Anthropic(base_url=fake_anthropic.base_url, api_key="sk-ant-fake", max_retries=0)


def test_anthropic_sdk_streams_text_and_cumulative_usage(claude: anthropic.Anthropic, fake_anthropic: FakeAnthropic) -> None:
    fake_anthropic.cache_read_tokens = 2
    with claude.messages.stream(
        model="claude-fake", max_tokens=100, system="Be brief.", messages=[{"role": "user", "content": "Hi there"}]
    ) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert text == REPLY
    assert final.stop_reason == "end_turn"
    assert final.usage.output_tokens == len(tokenize(REPLY)), "message_delta usage is cumulative, not added"
    assert final.usage.cache_read_input_tokens == 2
    assert final.usage.input_tokens + 2 == fake_anthropic.prompt_tokens(fake_anthropic.requests[0])
    sent = fake_anthropic.headers[0]
    assert "sk-ant-fake" in (sent.get("x-api-key"), sent.get("authorization", "").removeprefix("Bearer "))
    assert "anthropic-version" in sent


def test_anthropic_sdk_reads_a_whole_message(claude: anthropic.Anthropic) -> None:
    message = claude.messages.create(model="claude-fake", max_tokens=100, messages=[{"role": "user", "content": "Hi"}])
    assert message.content[0].type == "text" and message.content[0].text == REPLY


def test_anthropic_sdk_sees_rate_limits_and_stream_errors(claude: anthropic.Anthropic, fake_anthropic: FakeAnthropic) -> None:
    fake_anthropic.faults.append(Fault(status=429, retry_after=4, message="Number of requests has exceeded your rate limit"))
    with pytest.raises(anthropic.RateLimitError) as caught:
        claude.messages.create(model="claude-fake", max_tokens=10, messages=[{"role": "user", "content": "Hi"}])
    assert caught.value.response.headers["retry-after"] == "4"
    fake_anthropic.faults.append(Fault(error_after=2, message="Overloaded"))
    with (
        pytest.raises(anthropic.APIStatusError, match="Overloaded"),
        claude.messages.stream(model="claude-fake", max_tokens=10, messages=[{"role": "user", "content": "Hi"}]) as stream,
    ):
        stream.until_done()


WEATHER = {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}


def test_anthropic_sdk_reads_a_streamed_tool_use(claude: anthropic.Anthropic, fake_anthropic: FakeAnthropic) -> None:
    fake_anthropic.tool_call = ("get_weather", '{"city": "Paris", "days": [1, 2]}')
    tools = [{"name": "get_weather", "description": "Weather in a city", "input_schema": WEATHER}]
    with claude.messages.stream(
        model="claude-fake",
        max_tokens=100,
        tools=tools,
        messages=[{"role": "user", "content": "Weather in Paris?"}],  # type: ignore[list-item]
    ) as stream:
        final = stream.get_final_message()
    [block] = final.content
    assert block.type == "tool_use" and block.name == "get_weather" and block.id.startswith("toolu_")
    assert block.input == {"city": "Paris", "days": [1, 2]}
    assert final.stop_reason == "tool_use"
    whole = claude.messages.create(model="claude-fake", max_tokens=100, tools=tools, messages=[{"role": "user", "content": "Hi"}])  # type: ignore[list-item]
    assert whole.content[0].type == "tool_use" and whole.content[0].input == {"city": "Paris", "days": [1, 2]}


# --- Gemini ---------------------------------------------------------------------------------------


@pytest.fixture
def gemini(fake_gemini: FakeGemini) -> genai.Client:
    fake_gemini.reply = REPLY
    return genai.Client(api_key="gm-fake", http_options=genai_types.HttpOptions(base_url=fake_gemini.base_url))


def test_gemini_sdk_streams_text_and_usage(gemini: genai.Client, fake_gemini: FakeGemini) -> None:
    chunks = list(
        gemini.models.generate_content_stream(
            model="gemini-fake",
            contents="Hi there",
            config=genai_types.GenerateContentConfig(system_instruction="Be brief.", max_output_tokens=50),
        )
    )
    assert "".join(c.text or "" for c in chunks) == REPLY
    assert chunks[-1].candidates[0].finish_reason == genai_types.FinishReason.STOP
    usage = chunks[-1].usage_metadata
    assert usage.candidates_token_count == len(tokenize(REPLY))
    assert usage.prompt_token_count == fake_gemini.prompt_tokens(fake_gemini.requests[0])
    sent = fake_gemini.requests[0]
    assert sent["systemInstruction"]["parts"][0]["text"] == "Be brief." and sent["generationConfig"]["maxOutputTokens"] == 50
    assert fake_gemini.headers[0]["x-goog-api-key"] == "gm-fake"


def test_gemini_sdk_reads_a_whole_response_and_a_safety_stop(gemini: genai.Client, fake_gemini: FakeGemini) -> None:
    assert gemini.models.generate_content(model="gemini-fake", contents="Hi").text == REPLY
    fake_gemini.faults.append(Fault(filtered_after=2))
    chunks = list(gemini.models.generate_content_stream(model="gemini-fake", contents="Hi"))
    assert chunks[-1].candidates[0].finish_reason == genai_types.FinishReason.SAFETY
    assert "".join(c.text or "" for c in chunks) == "".join(tokenize(REPLY)[:2])


def test_gemini_sdk_sees_quota_errors(gemini: genai.Client, fake_gemini: FakeGemini) -> None:
    fake_gemini.faults.append(Fault(status=429, message="Resource has been exhausted (e.g. check quota)."))
    with pytest.raises(genai_errors.ClientError) as caught:
        gemini.models.generate_content(model="gemini-fake", contents="Hi")
    assert caught.value.code == 429 and caught.value.status == "RESOURCE_EXHAUSTED"


def test_gemini_sdk_reads_a_function_call(gemini: genai.Client, fake_gemini: FakeGemini) -> None:
    fake_gemini.tool_call = ("get_weather", '{"city": "Paris"}')
    declaration = genai_types.FunctionDeclaration(name="get_weather", description="Weather in a city", parameters_json_schema=WEATHER)
    config = genai_types.GenerateContentConfig(tools=[genai_types.Tool(function_declarations=[declaration])])
    for chunks in (
        list(gemini.models.generate_content_stream(model="gemini-fake", contents="Weather in Paris?", config=config)),
        [gemini.models.generate_content(model="gemini-fake", contents="Weather in Paris?", config=config)],
    ):
        [call] = [c for chunk in chunks for c in chunk.function_calls or []]
        assert call.name == "get_weather" and call.args == {"city": "Paris"}
    sent = fake_gemini.requests[0]["tools"][0]["functionDeclarations"][0]
    # The SDK spells the field in snake case, the REST reference (and the platform's adapter) in camel case: the API's
    # proto JSON takes both.
    assert WEATHER in (sent.get("parametersJsonSchema"), sent.get("parameters_json_schema"))


# --- Ollama ---------------------------------------------------------------------------------------


@pytest.fixture
def llama(fake_ollama: FakeOllama) -> ollama.Client:
    fake_ollama.reply = REPLY
    return ollama.Client(host=fake_ollama.base_url)


def test_ollama_sdk_streams_text_and_counts(llama: ollama.Client, fake_ollama: FakeOllama) -> None:
    parts = list(
        llama.chat(model="llama-fake:latest", messages=[{"role": "user", "content": "Hi there"}], stream=True, options={"temperature": 0.1})
    )
    assert "".join(p.message.content or "" for p in parts) == REPLY
    assert parts[-1].done and parts[-1].done_reason == "stop"
    assert parts[-1].eval_count == len(tokenize(REPLY))
    assert parts[-1].prompt_eval_count == fake_ollama.prompt_tokens(fake_ollama.requests[0])
    assert fake_ollama.requests[0]["options"] == {"temperature": 0.1}


def test_ollama_sdk_reads_a_whole_reply_models_and_errors(llama: ollama.Client, fake_ollama: FakeOllama) -> None:
    assert llama.chat(model="llama-fake:latest", messages=[{"role": "user", "content": "Hi"}]).message.content == REPLY
    assert [m.model for m in llama.list().models] == ["llama-fake:latest"]
    fake_ollama.faults.append(Fault(status=404, message='model "nope" not found, try pulling it first'))
    with pytest.raises(ollama.ResponseError, match="not found") as caught:
        llama.chat(model="nope", messages=[{"role": "user", "content": "Hi"}])
    assert caught.value.status_code == 404
    fake_ollama.faults.append(Fault(error_after=1, message="the runner crashed"))
    with pytest.raises(ollama.ResponseError, match="the runner crashed"):
        list(llama.chat(model="llama-fake:latest", messages=[{"role": "user", "content": "Hi"}], stream=True))


def test_ollama_sdk_reads_tool_calls(llama: ollama.Client, fake_ollama: FakeOllama) -> None:
    fake_ollama.tool_call = ("get_weather", '{"city": "Paris"}')
    tools = [{"type": "function", "function": {"name": "get_weather", "description": "Weather", "parameters": WEATHER}}]
    question = [{"role": "user", "content": "Weather in Paris?"}]
    streamed = [
        c
        for part in llama.chat(model="llama-fake:latest", messages=question, tools=tools, stream=True)
        for c in part.message.tool_calls or []
    ]
    whole = llama.chat(model="llama-fake:latest", messages=question, tools=tools).message.tool_calls or []
    for [call] in (streamed, whole):
        assert call.function.name == "get_weather" and dict(call.function.arguments) == {"city": "Paris"}


def test_gemini_and_ollama_sdks_read_embeddings(gemini: genai.Client, fake_gemini: FakeGemini, llama: ollama.Client) -> None:
    texts = ["first text", "second text"]
    config = genai_types.EmbedContentConfig(output_dimensionality=16)
    answer = gemini.models.embed_content(model="text-embedding-fake", contents=texts, config=config)
    assert [e.values for e in answer.embeddings or []] == [fake_vector(text, 16) for text in texts], fake_gemini.requests[-1]
    assert fake_gemini.requests[-1]["requests"][0]["outputDimensionality"] == 16
    embedded = llama.embed(model="embed-fake", input=texts, dimensions=16)
    assert [list(v) for v in embedded.embeddings] == [fake_vector(text, 16) for text in texts]


def test_anthropic_sdk_reads_signed_thinking_before_the_answer(claude: anthropic.Anthropic, fake_anthropic: FakeAnthropic) -> None:
    thinking: Any = {"type": "enabled", "budget_tokens": 1024}
    with claude.messages.stream(
        model="claude-fake", max_tokens=2048, thinking=thinking, messages=[{"role": "user", "content": "Hi"}]
    ) as stream:
        final = stream.get_final_message()
    whole = claude.messages.create(model="claude-fake", max_tokens=2048, thinking=thinking, messages=[{"role": "user", "content": "Hi"}])
    for message in (final, whole):
        thought, answer = message.content
        assert thought.type == "thinking" and thought.thinking == fake_anthropic.thought and thought.signature.startswith("sig-")
        assert answer.type == "text" and answer.text == REPLY
