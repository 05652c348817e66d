"""No setting a provider is said to honour is dropped: each one the capabilities table admits for a provider is set,
sent through its adapter to its vendor's fake, and found in what the fake received, in the vendor's own form.

A setting added to `SUPPORTED_PARAMS` without a place here fails the first test: say where it goes, or refuse it."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

import aiohttp
import pytest

from chatbot_contracts import ChatMessage, ChatRequest, ModelSpec
from chatbot_contracts.capabilities import SUPPORTED_PARAMS
from chatbot_devtools.fakes import FakeAnthropic, FakeGemini, FakeOllama, FakeOpenAI, FakeUpstream
from chatbot_devtools.serve import ThreadedServer
from chatbot_inference.providers import AnthropicProvider, GeminiProvider, OllamaProvider, OpenAIProvider, Provider

WEATHER = {"type": "object", "properties": {"city": {"type": "string"}}}
TOOL = {"type": "function", "function": {"name": "get_weather", "description": "Weather", "parameters": WEATHER}}
SCHEMA = {"type": "object", "properties": {"answer": {"type": "string"}}}
RESPONSE_FORMAT = {"type": "json_schema", "json_schema": {"name": "reply", "schema": SCHEMA}}
THINKING = {"type": "enabled", "budget_tokens": 1024}

VALUES: dict[str, Any] = {
    "temperature": 0.7,
    "top_p": 0.9,
    "max_tokens": 77,
    "stop": ["STOP!"],
    "seed": 1234,
    "frequency_penalty": 0.25,
    "presence_penalty": 0.5,
    "tools": [TOOL],
    "tool_choice": {"type": "function", "function": {"name": "get_weather"}},
    "parallel_tool_calls": False,
    "response_format": RESPONSE_FORMAT,
    "thinking": THINKING,
}

Found = Callable[[dict[str, Any]], Any]
"""Where a setting is in a request the fake received, as the value it must have there."""

WHERE: dict[str, dict[str, tuple[Found, Any]]] = {
    "openai": {
        "temperature": (lambda b: b["temperature"], 0.7),
        "top_p": (lambda b: b["top_p"], 0.9),
        "max_tokens": (lambda b: b["max_tokens"], 77),
        "stop": (lambda b: b["stop"], ["STOP!"]),
        "seed": (lambda b: b["seed"], 1234),
        "frequency_penalty": (lambda b: b["frequency_penalty"], 0.25),
        "presence_penalty": (lambda b: b["presence_penalty"], 0.5),
        "tools": (lambda b: b["tools"], [TOOL]),
        "tool_choice": (lambda b: b["tool_choice"], VALUES["tool_choice"]),
        "parallel_tool_calls": (lambda b: b["parallel_tool_calls"], False),
        "response_format": (lambda b: b["response_format"], RESPONSE_FORMAT),
        "dimensions": (lambda b: b["dimensions"], 12),
    },
    "anthropic": {
        "temperature": (lambda b: b["temperature"], 0.7),
        "top_p": (lambda b: b["top_p"], 0.9),
        "max_tokens": (lambda b: b["max_tokens"], 77),
        "stop": (lambda b: b["stop_sequences"], ["STOP!"]),
        "tools": (lambda b: [t["name"] for t in b["tools"]], ["get_weather"]),
        "tool_choice": (lambda b: b["tool_choice"]["name"], "get_weather"),
        "parallel_tool_calls": (lambda b: b["tool_choice"]["disable_parallel_tool_use"], True),
        "response_format": (lambda b: (b["tool_choice"], b["tools"][0]["input_schema"]), ({"type": "tool", "name": "reply"}, SCHEMA)),
        "thinking": (lambda b: b["thinking"], THINKING),
    },
    "gemini": {
        "temperature": (lambda b: b["generationConfig"]["temperature"], 0.7),
        "top_p": (lambda b: b["generationConfig"]["topP"], 0.9),
        "max_tokens": (lambda b: b["generationConfig"]["maxOutputTokens"], 77),
        "stop": (lambda b: b["generationConfig"]["stopSequences"], ["STOP!"]),
        "seed": (lambda b: b["generationConfig"]["seed"], 1234),
        "frequency_penalty": (lambda b: b["generationConfig"]["frequencyPenalty"], 0.25),
        "presence_penalty": (lambda b: b["generationConfig"]["presencePenalty"], 0.5),
        "tools": (lambda b: b["tools"][0]["functionDeclarations"][0]["parametersJsonSchema"], WEATHER),
        "tool_choice": (lambda b: b["toolConfig"]["functionCallingConfig"]["allowedFunctionNames"], ["get_weather"]),
        "response_format": (lambda b: b["generationConfig"]["responseJsonSchema"], SCHEMA),
        "dimensions": (lambda b: b["requests"][0]["outputDimensionality"], 12),
    },
    "ollama": {
        "temperature": (lambda b: b["options"]["temperature"], 0.7),
        "top_p": (lambda b: b["options"]["top_p"], 0.9),
        "max_tokens": (lambda b: b["options"]["num_predict"], 77),
        "stop": (lambda b: b["options"]["stop"], ["STOP!"]),
        "seed": (lambda b: b["options"]["seed"], 1234),
        "frequency_penalty": (lambda b: b["options"]["frequency_penalty"], 0.25),
        "presence_penalty": (lambda b: b["options"]["presence_penalty"], 0.5),
        "tools": (lambda b: b["tools"], [TOOL]),
        "response_format": (lambda b: b["format"], SCHEMA),
        "dimensions": (lambda b: b["dimensions"], 12),
    },
}
INHERENT = {("gemini", "parallel_tool_calls"), ("ollama", "parallel_tool_calls")}
"""Settings admitted only at the value that is the provider's own behaviour (`true`: they may call several tools at
once), so nothing is sent for them."""
ADAPTERS: dict[str, tuple[type[FakeUpstream], str, Callable[[aiohttp.ClientSession], Provider]]] = {
    "openai": (FakeOpenAI, "/v1", OpenAIProvider),
    "anthropic": (FakeAnthropic, "", AnthropicProvider),
    "gemini": (FakeGemini, "", GeminiProvider),
    "ollama": (FakeOllama, "", OllamaProvider),
}


def test_every_setting_a_provider_honours_has_a_place_in_its_request() -> None:
    for provider, places in WHERE.items():
        admitted = {name for name in SUPPORTED_PARAMS[provider] if (provider, name) not in INHERENT}  # type: ignore[index]
        assert admitted == set(places), f"{provider}: settings admitted but not checked here: {admitted ^ set(places)}"


@pytest.fixture(params=list(ADAPTERS))
async def served(request: pytest.FixtureRequest) -> AsyncIterator[tuple[str, FakeUpstream]]:
    fake_type, suffix, _ = ADAPTERS[request.param]
    fake = fake_type(reply='{"answer": "yes"}')
    server = ThreadedServer(fake).start()
    fake.base_url = server.url + suffix
    yield request.param, fake
    server.stop()


async def test_each_admitted_setting_reaches_the_provider_in_its_own_form(
    served: tuple[str, FakeUpstream], http: aiohttp.ClientSession, new_request: Callable[..., ChatRequest]
) -> None:
    provider, fake = served
    adapter = ADAPTERS[provider][2](http)
    spec = ModelSpec(provider=provider, upstream_model="fake-model", base_url=fake.base_url, max_output_tokens=256)  # type: ignore[arg-type]
    names = set(WHERE[provider]) - {"dimensions"}
    # Structured output is a forced tool on Anthropic, alone: each such setting goes in a call of its own.
    alone = {"response_format", "thinking"} & names if provider == "anthropic" else set()
    for group in [names - alone, *({name} for name in alone)]:
        params = {name: VALUES[name] for name in group}
        async for _ in adapter.stream(new_request(params=params), spec):
            pass
        for name in group:
            found, expected = WHERE[provider][name]
            assert found(fake.requests[-1]) == expected, f"{provider}: `{name}`"
    if "dimensions" in WHERE[provider]:
        request = new_request(params={"dimensions": 12}, messages=[ChatMessage(role="user", content="embed me")], purpose="embed")
        async for _ in adapter.embed(request, spec):
            pass
        found, expected = WHERE[provider]["dimensions"]
        assert found(fake.requests[-1]) == expected, f"{provider}: `dimensions`"
