"""Tools and structured output on every provider, through the OpenAI and the Anthropic API alike.

Each test checks both ends: what the client's own SDK reads, and what the fake provider received in its own
vendor's form (so a parameter accepted and not sent upstream fails here)."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import anthropic
import openai
import pytest

from chatbot_devtools.fakes import FakeAnthropic, FakeGemini, FakeOllama, FakeOpenAI
from chatbot_devtools.fakes.base import FakeUpstream
from chatbot_devtools.platform import LocalPlatform, every_provider, registry_toml

pytestmark = pytest.mark.e2e

WEATHER = {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}
TOOLS: Any = [{"type": "function", "function": {"name": "get_weather", "description": "Weather in a city", "parameters": WEATHER}}]
ARGUMENTS = '{"city": "Paris"}'
QUESTION: Any = [{"role": "user", "content": "What's the weather in Paris?"}]
ANTHROPIC_TOOL: Any = {"name": "get_weather", "description": "Weather in a city", "input_schema": WEATHER}
RESPONSES_TOOL: Any = {"type": "function", "name": "get_weather", "parameters": WEATHER}


class Stack:
    def __init__(self, url: str, key: str, fakes: dict[str, FakeUpstream]) -> None:
        self.url = url
        self.key = key
        self.fakes = fakes
        self.openai = openai.OpenAI(base_url=f"{url}/v1", api_key=key, max_retries=0, timeout=30)
        self.anthropic = anthropic.Anthropic(base_url=url, api_key=key, max_retries=0, timeout=30)


@pytest.fixture
def stack(
    platform_factory: Callable[..., LocalPlatform],
    fake_openai: FakeOpenAI,
    fake_anthropic: FakeAnthropic,
    fake_gemini: FakeGemini,
    fake_ollama: FakeOllama,
) -> Stack:
    registry = registry_toml(every_provider(fake_openai, fake_anthropic, fake_gemini, fake_ollama))
    platform = platform_factory(registry)
    url = platform.start_gateway()
    platform.start_worker(CHATBOT_PROVIDER_RETRIES="0")
    platform.wait_ready(url)
    fakes: dict[str, FakeUpstream] = {"gpt": fake_openai, "claude": fake_anthropic, "gemini": fake_gemini, "llama": fake_ollama}
    return Stack(url, platform.admin_key, fakes)


def _offered(alias: str, sent: dict[str, Any]) -> None:
    """The tool arrived in the provider's own form."""
    match alias:
        case "gpt" | "llama":
            assert sent["tools"] == TOOLS
        case "claude":
            assert sent["tools"] == [{"name": "get_weather", "description": "Weather in a city", "input_schema": WEATHER}]
        case "gemini":
            declaration = {"name": "get_weather", "description": "Weather in a city", "parametersJsonSchema": WEATHER}
            assert sent["tools"] == [{"functionDeclarations": [declaration]}]


def _result_sent(alias: str, sent: dict[str, Any], call_id: str) -> None:
    """The call and its result went back to the provider in its own form."""
    match alias:
        case "gpt":
            assert sent["messages"][-2]["tool_calls"][0]["id"] == call_id
            assert sent["messages"][-1] == {"role": "tool", "content": '{"temperature": 21}', "tool_call_id": call_id}
        case "claude":
            [use] = sent["messages"][-2]["content"]
            assert use == {"type": "tool_use", "id": call_id, "name": "get_weather", "input": {"city": "Paris"}}
            assert sent["messages"][-1] == {
                "role": "user",
                "content": [{"type": "tool_result", "tool_use_id": call_id, "content": '{"temperature": 21}'}],
            }
        case "gemini":
            assert sent["contents"][-2] == {
                "role": "model",
                "parts": [{"functionCall": {"name": "get_weather", "args": {"city": "Paris"}}}],
            }
            assert sent["contents"][-1] == {
                "role": "user",
                "parts": [{"functionResponse": {"name": "get_weather", "response": {"temperature": 21}}}],
            }
        case "llama":
            assert sent["messages"][-2]["tool_calls"] == [{"function": {"name": "get_weather", "arguments": {"city": "Paris"}}}]
            assert sent["messages"][-1] == {"role": "tool", "content": '{"temperature": 21}', "tool_name": "get_weather"}


@pytest.mark.parametrize("alias", ["gpt", "claude", "gemini", "llama"])
def test_the_openai_sdk_calls_tools_on_every_provider(stack: Stack, alias: str) -> None:
    fake = stack.fakes[alias]
    fake.tool_call = ("get_weather", ARGUMENTS)
    with stack.openai.chat.completions.stream(model=alias, messages=QUESTION, tools=TOOLS, tool_choice="auto") as stream:
        streamed = stream.get_final_completion()
    whole = stack.openai.chat.completions.create(model=alias, messages=QUESTION, tools=TOOLS)
    for completion in (streamed, whole):
        [call] = completion.choices[0].message.tool_calls or []
        assert call.type == "function" and call.function.name == "get_weather"
        assert json.loads(call.function.arguments) == {"city": "Paris"}
        assert call.id, "every call has an id, also where the provider gives none"
        assert completion.choices[0].finish_reason == "tool_calls"
    _offered(alias, fake.requests[0])

    fake.tool_call = None
    fake.reply = "It is 21 degrees in Paris. "
    call = (whole.choices[0].message.tool_calls or [])[0]
    assistant = {
        "role": "assistant",
        "content": None,
        "tool_calls": [{"id": call.id, "type": "function", "function": {"name": "get_weather", "arguments": ARGUMENTS}}],
    }
    answer = stack.openai.chat.completions.create(
        model=alias,
        messages=[*QUESTION, assistant, {"role": "tool", "tool_call_id": call.id, "content": '{"temperature": 21}'}],
        tools=TOOLS,
    )
    assert answer.choices[0].message.content == "It is 21 degrees in Paris. "
    _result_sent(alias, fake.requests[-1], call.id)


@pytest.mark.parametrize("alias", ["gpt", "gemini"])
def test_the_anthropic_sdk_streams_tool_use_from_other_providers(stack: Stack, alias: str) -> None:
    fake = stack.fakes[alias]
    fake.tool_call = ("get_weather", ARGUMENTS)
    tools: Any = [{"name": "get_weather", "description": "Weather in a city", "input_schema": WEATHER}]
    with stack.anthropic.messages.stream(model=alias, max_tokens=100, tools=tools, messages=QUESTION) as stream:
        final = stream.get_final_message()
    [block] = final.content
    assert block.type == "tool_use" and block.name == "get_weather" and block.input == {"city": "Paris"}
    assert final.stop_reason == "tool_use"
    _offered(alias, fake.requests[-1])

    fake.tool_call = None
    fake.reply = "Mild, 21 degrees. "
    turns: Any = [
        *QUESTION,
        {"role": "assistant", "content": [{"type": "tool_use", "id": block.id, "name": "get_weather", "input": {"city": "Paris"}}]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": block.id, "content": '{"temperature": 21}'}]},
    ]
    with stack.anthropic.messages.stream(model=alias, max_tokens=100, tools=tools, messages=turns) as stream:
        assert "".join(stream.text_stream) == "Mild, 21 degrees. "
    _result_sent(alias, fake.requests[-1], block.id)
    whole = stack.anthropic.messages.create(model=alias, max_tokens=100, tools=tools, tool_choice={"type": "any"}, messages=QUESTION)
    assert whole.content[0].type == "text"
    sent = fake.requests[-1]
    if alias == "gpt":
        assert sent["tool_choice"] == "required"
    else:
        assert sent["toolConfig"] == {"functionCallingConfig": {"mode": "ANY"}}


ANSWER_SCHEMA = {
    "type": "object",
    "properties": {"city": {"type": "string"}, "celsius": {"type": "number"}},
    "required": ["city", "celsius"],
}
JSON_ANSWER = '{"city": "Paris", "celsius": 21}'


@pytest.mark.parametrize("alias", ["gpt", "claude", "gemini", "llama"])
def test_structured_output_reaches_each_provider_in_its_own_form(stack: Stack, alias: str) -> None:
    fake = stack.fakes[alias]
    fake.reply = JSON_ANSWER
    response_format: Any = {"type": "json_schema", "json_schema": {"name": "weather", "schema": ANSWER_SCHEMA, "strict": True}}
    for stream in (False, True):
        if stream:
            chunks = stack.openai.chat.completions.create(model=alias, messages=QUESTION, response_format=response_format, stream=True)
            text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
        else:
            completion = stack.openai.chat.completions.create(model=alias, messages=QUESTION, response_format=response_format)
            text = completion.choices[0].message.content or ""
            assert completion.choices[0].finish_reason == "stop"
        assert json.loads(text) == {"city": "Paris", "celsius": 21}
    sent = fake.requests[-1]
    match alias:
        case "gpt":
            assert sent["response_format"] == response_format
        case "claude":
            assert sent["tools"] == [{"name": "weather", "description": "Give the answer in this form.", "input_schema": ANSWER_SCHEMA}]
            assert sent["tool_choice"] == {"type": "tool", "name": "weather"}
        case "gemini":
            config = sent["generationConfig"]
            assert config["responseMimeType"] == "application/json" and config["responseJsonSchema"] == ANSWER_SCHEMA
        case "llama":
            assert sent["format"] == ANSWER_SCHEMA


@pytest.mark.parametrize(
    ("alias", "extra", "param"),
    [
        ("local", {"tools": TOOLS}, "tools"),
        ("local", {"response_format": {"type": "json_object"}}, "response_format"),
        ("gemini", {"tools": TOOLS, "parallel_tool_calls": False}, "parallel_tool_calls"),
        ("llama", {"tools": TOOLS, "tool_choice": "required"}, "tool_choice"),
        ("claude", {"tools": TOOLS, "response_format": {"type": "json_object"}}, "response_format"),
        ("gpt", {"response_format": {"type": "json_schema", "json_schema": {"name": "has space"}}}, None),
    ],
)
def test_what_a_provider_cannot_honour_is_refused_by_name(stack: Stack, alias: str, extra: dict[str, Any], param: str | None) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        stack.openai.chat.completions.create(model=alias, messages=QUESTION, **extra)
    error: Any = caught.value.body
    if param is not None:
        assert error["param"] == param and f"`{param}" in error["message"]
    else:
        assert "response_format" in error["message"]
    assert all(not fake.requests for fake in stack.fakes.values()), "nothing refused reaches a provider"


def test_anthropic_server_tools_and_bad_blocks_are_refused_by_name(stack: Stack) -> None:
    with pytest.raises(anthropic.BadRequestError) as caught:
        stack.anthropic.messages.create(
            model="gpt", max_tokens=10, messages=QUESTION, tools=[{"type": "web_search_20250305", "name": "web_search"}]
        )
    assert "web_search_20250305" in str(caught.value) and "tools[0]" in str(caught.value)
    with pytest.raises(anthropic.BadRequestError) as caught:
        stack.anthropic.messages.create(
            model="gpt",
            max_tokens=10,
            messages=[{"role": "user", "content": [{"type": "tool_use", "id": "x", "name": "y", "input": {}}]}],
        )
    assert "messages[0].content[0]" in str(caught.value)


@pytest.mark.parametrize(
    ("alias", "forced"),
    [
        ("gpt", ("tool_choice", {"type": "function", "function": {"name": "get_weather"}})),
        ("claude", ("tool_choice", {"type": "tool", "name": "get_weather"})),
        ("gemini", ("toolConfig", {"functionCallingConfig": {"mode": "ANY", "allowedFunctionNames": ["get_weather"]}})),
    ],
)
def test_a_forced_tool_reaches_each_provider_in_its_own_form(stack: Stack, alias: str, forced: tuple[str, Any]) -> None:
    fake = stack.fakes[alias]
    fake.tool_call = ("get_weather", ARGUMENTS)
    choice: Any = {"type": "function", "function": {"name": "get_weather"}}
    completion = stack.openai.chat.completions.create(model=alias, messages=QUESTION, tools=TOOLS, tool_choice=choice)
    assert (completion.choices[0].message.tool_calls or [])[0].function.name == "get_weather"
    key, value = forced
    assert fake.requests[0][key] == value


@pytest.mark.parametrize(
    ("api", "extra", "where"),
    [
        ("chat", {"tools": TOOLS, "tool_choice": {"type": "function", "function": "get_weather"}}, "$.tool_choice"),
        ("chat", {"tools": TOOLS, "tool_choice": {"type": "function", "function": {"name": "get_time"}}}, "get_time"),
        ("chat", {"tool_choice": "required"}, "no `tools`"),
        ("messages", {"tools": [ANTHROPIC_TOOL], "tool_choice": {"type": "tool", "name": "get_time"}}, "get_time"),
        ("messages", {"tool_choice": {"type": "any"}}, "no `tools`"),
        ("responses", {"tools": [RESPONSES_TOOL], "tool_choice": {"type": "function", "name": "get_time"}}, "get_time"),
        ("responses", {"tool_choice": "required"}, "no `tools`"),
    ],
)
def test_a_tool_choice_the_requests_tools_cannot_honour_is_refused_before_any_provider(
    stack: Stack, api: str, extra: dict[str, Any], where: str
) -> None:
    """A forced tool that is not among the request's tools, a call required of a request with none, or a choice of the
    wrong shape: each once went to the provider, and the wrong shape failed in the worker on every adapter but OpenAI's."""
    ask: dict[str, Callable[[str], object]] = {
        "chat": lambda alias: stack.openai.chat.completions.create(model=alias, messages=QUESTION, **extra),
        "messages": lambda alias: stack.anthropic.messages.create(model=alias, max_tokens=10, messages=QUESTION, **extra),
        "responses": lambda alias: stack.openai.responses.create(model=alias, input="What's the weather in Paris?", **extra),
    }
    for alias in ("claude", "gemini", "gpt"):
        with pytest.raises((openai.BadRequestError, anthropic.BadRequestError)) as caught:
            ask[api](alias)
        assert "tool_choice" in str(caught.value) and where in str(caught.value)
    assert all(not fake.requests for fake in stack.fakes.values()), "nothing refused reaches a provider"
