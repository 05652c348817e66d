"""The walking skeleton end to end: the official `openai` SDK → gateway → Redis → worker → fake upstream."""

from __future__ import annotations

from collections.abc import Callable

import openai
import pytest

from chatbot_devtools.fakes import FakeOpenAI, Fault, tokenize
from chatbot_devtools.platform import LocalPlatform

pytestmark = pytest.mark.e2e

REPLY = "Redis streams carry every token, in order, to whoever asks. Ünïcödé and emoji 🚀 too.\n"


@pytest.fixture
def gateway(platform_factory: Callable[..., LocalPlatform], fake_registry: str, fake_openai: FakeOpenAI) -> tuple[str, LocalPlatform]:
    fake_openai.reply = REPLY
    platform = platform_factory(fake_registry)
    url = platform.start_gateway()
    platform.start_worker()
    platform.wait_ready(url)
    return url, platform


def client(url: str, key: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{url}/v1", api_key=key, max_retries=0, timeout=30)


def test_a_streamed_reply_is_the_upstreams_text_and_usage(gateway: tuple[str, LocalPlatform], fake_openai: FakeOpenAI) -> None:
    url, platform = gateway
    stream = client(url, platform.admin_key).chat.completions.create(
        model="fake",
        messages=[{"role": "system", "content": "Be brief."}, {"role": "user", "content": "How do tokens travel?"}],
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == REPLY
    assert [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason] == ["stop"]
    usage = chunks[-1].usage
    assert usage is not None
    upstream_request = fake_openai.requests[-1]
    assert usage.prompt_tokens == FakeOpenAI.prompt_tokens(upstream_request)
    assert usage.completion_tokens == len(tokenize(REPLY))
    assert upstream_request["messages"] == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "How do tokens travel?"},
    ]
    assert upstream_request["model"] == "fake-model" and upstream_request["stream"] is True


def test_a_whole_reply_is_the_upstreams_text_and_usage(gateway: tuple[str, LocalPlatform], fake_openai: FakeOpenAI) -> None:
    url, platform = gateway
    completion = client(url, platform.admin_key).chat.completions.create(
        model="fake", messages=[{"role": "user", "content": "Say it all at once."}], temperature=0.3, max_tokens=50
    )
    assert completion.choices[0].message.content == REPLY
    assert completion.choices[0].finish_reason == "stop"
    assert completion.usage is not None
    assert completion.usage.prompt_tokens == FakeOpenAI.prompt_tokens(fake_openai.requests[-1])
    assert completion.usage.completion_tokens == len(tokenize(REPLY))
    assert fake_openai.requests[-1]["temperature"] == 0.3 and fake_openai.requests[-1]["max_tokens"] == 50


def test_an_upstream_rate_limit_reaches_the_sdk_as_429(
    platform_factory: Callable[..., LocalPlatform], fake_registry: str, fake_openai: FakeOpenAI
) -> None:
    platform = platform_factory(fake_registry)
    url = platform.start_gateway()
    platform.start_worker(CHATBOT_PROVIDER_RETRIES="0")
    platform.wait_ready(url)
    sdk = client(url, platform.admin_key)
    for stream in (False, True):
        fake_openai.faults.append(Fault(status=429, retry_after=2, message="Rate limit reached for requests"))
        # A failure before the first token has its own HTTP status, so even a stream raises at once.
        with pytest.raises(openai.RateLimitError) as caught:
            sdk.chat.completions.create(model="fake", messages=[{"role": "user", "content": "Hi"}], stream=stream)
        # The provider's own words stay in the worker's log; the tenant reads the class of the failure.
        assert "rate limiting the platform; retry later (HTTP 429)" in caught.value.message
        assert caught.value.response.headers["retry-after"] == "2"


def test_an_error_mid_stream_reaches_the_sdk_after_the_text_so_far(gateway: tuple[str, LocalPlatform], fake_openai: FakeOpenAI) -> None:
    url, platform = gateway
    fake_openai.faults.append(Fault(error_after=3, message="The server had an error while processing your request"))
    received: list[str] = []
    stream = client(url, platform.admin_key).chat.completions.create(
        model="fake", messages=[{"role": "user", "content": "Hi"}], stream=True
    )
    with pytest.raises(openai.APIError, match="the model's provider failed to answer"):
        received.extend(chunk.choices[0].delta.content or "" for chunk in stream)
    assert "".join(received) == "".join(tokenize(REPLY)[:3])


TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "Weather in a city",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
        },
    }
]


def test_tool_calls_pass_through_both_ways(gateway: tuple[str, LocalPlatform], fake_openai: FakeOpenAI) -> None:
    url, platform = gateway
    sdk = client(url, platform.admin_key)
    fake_openai.tool_call = ("get_weather", '{"city": "Paris"}')
    question = [{"role": "user", "content": "What's the weather in Paris?"}]
    with sdk.chat.completions.stream(model="fake", messages=question, tools=TOOLS, tool_choice="auto") as stream:  # type: ignore[arg-type]
        streamed = stream.get_final_completion()
    whole = sdk.chat.completions.create(model="fake", messages=question, tools=TOOLS)  # type: ignore[arg-type]
    for completion in (streamed, whole):
        [call] = completion.choices[0].message.tool_calls or []
        assert (call.function.name, call.function.arguments) == ("get_weather", '{"city": "Paris"}')
        assert call.id.startswith("call_")
        assert completion.choices[0].finish_reason == "tool_calls"
    sent = fake_openai.requests[0]
    assert sent["tools"] == TOOLS and sent["tool_choice"] == "auto"

    fake_openai.tool_call = None
    call = (whole.choices[0].message.tool_calls or [])[0]
    answer = sdk.chat.completions.create(
        model="fake",
        messages=[
            *question,
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {"id": call.id, "type": "function", "function": {"name": "get_weather", "arguments": call.function.arguments}}
                ],
            },
            {"role": "tool", "tool_call_id": call.id, "content": '{"temperature": 21}'},
        ],
        tools=TOOLS,  # type: ignore[arg-type]
    )
    assert answer.choices[0].message.content == REPLY
    relayed = fake_openai.requests[-1]["messages"]
    assert relayed[1] == {
        "role": "assistant",
        "content": None,
        "tool_calls": [{"id": call.id, "type": "function", "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}}],
    }
    assert relayed[2] == {"role": "tool", "content": '{"temperature": 21}', "tool_call_id": call.id}


def test_responses_say_what_the_platform_added(gateway: tuple[str, LocalPlatform]) -> None:
    url, platform = gateway
    sdk = client(url, platform.admin_key)
    raw = sdk.chat.completions.with_raw_response.create(model="fake", messages=[{"role": "user", "content": "Hi"}])
    assert len(raw.headers["x-request-id"]) == 32
    later = sdk.chat.completions.with_raw_response.create(model="fake", messages=[{"role": "user", "content": "Hi"}])
    assert raw.headers["x-request-id"] < later.headers["x-request-id"], "request ids are time-ordered (the request log's index)"
    overhead = float(raw.headers["x-chatbot-overhead-ms"])
    assert 0 <= overhead < 5_000


def test_a_worker_serves_its_metrics_on_its_own_port(gateway: tuple[str, LocalPlatform]) -> None:
    import httpx

    url, platform = gateway
    client(url, platform.admin_key).chat.completions.create(model="fake", messages=[{"role": "user", "content": "count me"}])
    worker = next(p for p in platform.processes if p.service == "inference")
    metrics = httpx.get(f"http://127.0.0.1:{worker.env['CHATBOT_METRICS_PORT']}/metrics").text
    assert (
        'gen_ai_client_operation_duration_seconds_count{gen_ai_provider_name="openai",gen_ai_request_model="fake",outcome="completed"} 1.0'
        in metrics
    )
