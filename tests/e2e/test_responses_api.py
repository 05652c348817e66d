"""The Responses API (`/v1/responses`) through the official `openai` SDK and the OpenAI Agents SDK, answered by an
OpenAI, an Anthropic and a Gemini model."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import httpx
import openai
import pytest

from chatbot_devtools.fakes import FakeAnthropic, FakeGemini, FakeOpenAI
from chatbot_devtools.fakes.base import FakeUpstream
from chatbot_devtools.platform import LocalPlatform, create_key, registry_toml

pytestmark = pytest.mark.e2e

WEATHER = {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}
TOOL: Any = {"type": "function", "name": "get_weather", "description": "Weather in a city", "parameters": WEATHER}
ALIASES = ["gpt", "claude", "gemini"]


class Stack:
    def __init__(self, url: str, platform: LocalPlatform, fakes: dict[str, FakeUpstream]) -> None:
        self.url = url
        self.platform = platform
        self.fakes = fakes
        self.sdk = openai.OpenAI(base_url=f"{url}/v1", api_key=platform.admin_key, max_retries=0, timeout=30)


@pytest.fixture
def stack(
    platform_factory: Callable[..., LocalPlatform], fake_openai: FakeOpenAI, fake_anthropic: FakeAnthropic, fake_gemini: FakeGemini
) -> Stack:
    registry = registry_toml(
        {
            "gpt": {"provider": "openai", "upstream_model": "gpt-fake", "base_url": fake_openai.base_url},
            "claude": {"provider": "anthropic", "upstream_model": "claude-fake", "base_url": fake_anthropic.base_url},
            "gemini": {"provider": "gemini", "upstream_model": "gemini-fake", "base_url": fake_gemini.base_url},
        }
    )
    platform = platform_factory(registry)
    url = platform.start_gateway()
    platform.start_worker(CHATBOT_PROVIDER_RETRIES="0")
    platform.wait_ready(url)
    return Stack(url, platform, {"gpt": fake_openai, "claude": fake_anthropic, "gemini": fake_gemini})


@pytest.mark.parametrize("alias", ALIASES)
def test_a_response_is_created_kept_fetched_and_deleted(stack: Stack, alias: str) -> None:
    stack.fakes[alias].reply = "Paris is mild today. "
    response = stack.sdk.responses.create(
        model=alias, instructions="Be brief.", input="Weather in Paris?", max_output_tokens=50, metadata={"team": "a"}
    )
    assert response.status == "completed" and response.output_text == "Paris is mild today. "
    assert response.model == alias and response.instructions == "Be brief." and response.metadata == {"team": "a"}
    assert response.usage is not None and response.usage.output_tokens == 4
    assert response.usage.total_tokens == response.usage.input_tokens + 4
    fetched = stack.sdk.responses.retrieve(response.id)
    assert fetched.output_text == response.output_text and fetched.id == response.id
    assert stack.sdk.responses.delete(response.id) is None
    with pytest.raises(openai.NotFoundError):
        stack.sdk.responses.retrieve(response.id)
    with pytest.raises(openai.NotFoundError):
        stack.sdk.responses.create(model=alias, input="And tomorrow?", previous_response_id=response.id)


@pytest.mark.parametrize("alias", ALIASES)
def test_a_streamed_function_call_round_trip_with_previous_response_id(stack: Stack, alias: str) -> None:
    fake = stack.fakes[alias]
    fake.tool_call = ("get_weather", '{"city": "Paris"}')
    fake.reply = "It is 21 degrees. "
    with stack.sdk.responses.stream(model=alias, input="Weather in Paris?", tools=[TOOL]) as stream:
        kinds = [event.type for event in stream]
        first = stream.get_final_response()
    assert kinds[:2] == ["response.created", "response.in_progress"] and kinds[-1] == "response.completed"
    assert "response.output_item.added" in kinds and "response.function_call_arguments.done" in kinds
    [call] = first.output
    assert call.type == "function_call" and call.name == "get_weather" and json.loads(call.arguments) == {"city": "Paris"}

    with stack.sdk.responses.stream(
        model=alias,
        previous_response_id=first.id,
        input=[{"type": "function_call_output", "call_id": call.call_id, "output": '{"temperature": 21}'}],
        tools=[TOOL],
    ) as stream:
        deltas = [event.delta for event in stream if event.type == "response.output_text.delta"]
        second = stream.get_final_response()
    assert "".join(deltas) == second.output_text == "It is 21 degrees. "
    assert second.previous_response_id == first.id
    sent = fake.requests[-1]
    turns = {"gpt": "messages", "claude": "messages", "gemini": "contents"}[alias]
    assert len(sent[turns]) == 3, "the question, the call and its result all reach the provider"


def test_another_owners_response_is_not_found(stack: Stack) -> None:
    first = stack.sdk.responses.create(model="gpt", input="Hello")
    other = create_key(stack.url, stack.platform.admin_key, owner="team-b")
    intruder = openai.OpenAI(base_url=f"{stack.url}/v1", api_key=other["key"], max_retries=0, timeout=30)
    with pytest.raises(openai.NotFoundError):
        intruder.responses.retrieve(first.id)
    with pytest.raises(openai.NotFoundError):
        intruder.responses.create(model="gpt", input="Go on", previous_response_id=first.id)
    with pytest.raises(openai.NotFoundError):
        intruder.responses.delete(first.id)
    assert stack.sdk.responses.retrieve(first.id).id == first.id
    unkept = stack.sdk.responses.create(model="gpt", input="Hello", store=False)
    with pytest.raises(openai.NotFoundError):
        stack.sdk.responses.retrieve(unkept.id)


@pytest.mark.parametrize("alias", ALIASES)
def test_text_format_json_schema_reaches_the_provider(stack: Stack, alias: str) -> None:
    fake = stack.fakes[alias]
    fake.reply = '{"city": "Paris"}'
    text: Any = {"format": {"type": "json_schema", "name": "place", "schema": WEATHER, "strict": True}}
    response = stack.sdk.responses.create(model=alias, input="Where?", text=text)
    assert json.loads(response.output_text) == {"city": "Paris"}
    sent = fake.requests[-1]
    match alias:
        case "gpt":
            assert sent["response_format"] == {"type": "json_schema", "json_schema": {"name": "place", "schema": WEATHER, "strict": True}}
        case "claude":
            assert sent["tool_choice"] == {"type": "tool", "name": "place"}
        case "gemini":
            assert sent["generationConfig"]["responseJsonSchema"] == WEATHER


def test_what_cannot_be_served_is_refused_by_name(stack: Stack) -> None:
    cases: list[tuple[dict[str, Any], str]] = [
        ({"tools": [{"type": "web_search"}]}, "tools[0]"),
        ({"input": [{"type": "reasoning", "summary": []}]}, "input[0]"),
        ({"input": [{"role": "user", "content": [{"type": "input_file", "file_id": "file-1"}]}]}, "input[0].content[0]"),
        ({"input": [{"role": "user", "content": [{"type": "input_image", "file_id": "file-1"}]}]}, "input[0].content[0]"),
        ({"background": True}, "background"),
        ({"reasoning": {"effort": "high"}}, "reasoning"),
    ]
    for extra, param in cases:
        body = {"model": "gpt", "input": "Hi", **extra}
        response = httpx.post(f"{stack.url}/v1/responses", json=body, headers={"Authorization": f"Bearer {stack.platform.admin_key}"})
        assert response.status_code == 400, (extra, response.text)
        assert response.json()["error"]["param"] == param, response.text
    assert not stack.fakes["gpt"].requests


@pytest.mark.parametrize("alias", ["gpt", "claude"])
def test_an_agents_sdk_agent_runs_a_tool_to_its_final_answer(stack: Stack, alias: str) -> None:
    agents = pytest.importorskip("agents")
    fake = stack.fakes[alias]
    fake.tool_call = ("get_weather", '{"city": "Paris"}')
    fake.reply = "Paris: 21 degrees and sunny. "
    asked: list[str] = []

    @agents.function_tool
    def get_weather(city: str) -> str:
        """The weather in a city."""
        asked.append(city)
        return "21 degrees, sunny"

    client = openai.AsyncOpenAI(base_url=f"{stack.url}/v1", api_key=stack.platform.admin_key, max_retries=0)
    model = agents.OpenAIResponsesModel(model=alias, openai_client=client)
    agent = agents.Agent(name="Forecaster", instructions="Answer with the weather.", tools=[get_weather], model=model)
    result = agents.Runner.run_sync(agent, "What's the weather in Paris?", run_config=agents.RunConfig(tracing_disabled=True))
    assert result.final_output == "Paris: 21 degrees and sunny. "
    assert asked == ["Paris"]
