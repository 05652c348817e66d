"""A worker handling requests against the fake upstream: retries, fallbacks, deadlines, usage and cost."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import aiohttp
import msgspec
import pytest
import redis.asyncio as aioredis
import structlog
import structlog.testing

from chatbot_contracts import (
    DATA_FIELD_BYTES,
    ChatMessage,
    ChatRequest,
    Completed,
    Delta,
    Done,
    Error,
    Failed,
    FirstToken,
    GenerationStarted,
    Keys,
    Queued,
    Registry,
    Started,
    Usage,
    inference_event_decoder,
    stream_event_decoder,
)
from chatbot_devtools.fakes import FakeOpenAI, Fault, tokenize
from chatbot_devtools.platform import registry_toml
from chatbot_devtools.serve import ThreadedServer
from chatbot_inference import Worker
from chatbot_inference.providers import build_providers
from chatbot_inference.settings import ProviderSettings, WorkerSettings

REPLY = "Fallbacks answer when the first choice cannot."


@pytest.fixture
def backup_upstream() -> AsyncIterator[FakeOpenAI]:
    fake = FakeOpenAI(reply="The backup answered.", model="backup-model")
    server = ThreadedServer(fake).start()
    fake.base_url = f"{server.url}/v1"
    yield fake
    server.stop()


@pytest.fixture
def worker(
    redis: aioredis.Redis, namespace: str, http: aiohttp.ClientSession, fake_openai: FakeOpenAI, backup_upstream: FakeOpenAI
) -> Worker:
    fake_openai.reply = REPLY
    registry = Registry.parse(
        registry_toml(
            {
                "fast": {
                    "provider": "openai",
                    "upstream_model": "fake-model",
                    "base_url": fake_openai.base_url,
                    "input_usd_per_mtok": 1.0,
                    "output_usd_per_mtok": 2.0,
                    "fallbacks": ["backup"],
                },
                "backup": {"provider": "openai", "upstream_model": "backup-model", "base_url": backup_upstream.base_url},
                "martian": {"provider": "gemini", "upstream_model": "g"},
            }
        )
    )
    return Worker(
        redis,
        Keys(namespace),
        registry,
        build_providers(http),
        WorkerSettings(),
        ProviderSettings(provider_retries=2, retry_base_s=0.01, retry_max_s=0.05),
    )


async def stream_of(worker: Worker, request_id: str) -> list[object]:
    entries = await worker.redis.xrange(worker.keys.request_stream(request_id))
    return [stream_event_decoder.decode(fields[DATA_FIELD_BYTES]) for _, fields in entries]


async def log_of(worker: Worker) -> list[object]:
    entries = await worker.redis.xrange(worker.keys.inference_events)
    return [inference_event_decoder.decode(fields[DATA_FIELD_BYTES]) for _, fields in entries]


def text_of(events: list[object]) -> str:
    return "".join(e.text for e in events if isinstance(e, Delta))


async def test_a_completed_generation(worker: Worker, fake_openai: FakeOpenAI, new_request: Callable[..., ChatRequest]) -> None:
    request = new_request()
    await worker.handle(request)
    events = await stream_of(worker, request.request_id)
    started = events[0]
    assert isinstance(started, Started) and (started.model, started.provider, started.upstream_model) == ("fast", "openai", "fake-model")
    assert 0 <= started.waited_s < 5, "the time from enqueueing to the provider call"
    assert text_of(events) == REPLY
    usage = events[-2]
    assert isinstance(usage, Usage)
    prompt, output = FakeOpenAI.prompt_tokens(fake_openai.requests[0]), len(tokenize(REPLY))
    assert (usage.usage.input_tokens, usage.usage.output_tokens) == (prompt, output)
    assert usage.usage.cost_usd == pytest.approx((prompt * 1.0 + output * 2.0) / 1e6)
    assert events[-1] == Done(reason="stop")
    log = await log_of(worker)
    assert [type(e) for e in log] == [Queued, GenerationStarted, FirstToken, Completed]
    assert log[0].at == request.enqueued_at, "queued is dated when the gateway enqueued it"
    completed = log[-1]
    assert isinstance(completed, Completed)
    assert completed.text == REPLY and completed.usage == usage.usage and completed.provider == "openai"
    assert completed.ttft_s is not None and 0 <= completed.ttft_s <= completed.duration_s


async def test_a_long_answer_is_kept_whole(worker: Worker, fake_openai: FakeOpenAI, new_request: Callable[..., ChatRequest]) -> None:
    """The worker joins an answer's pieces as they arrive (`_Text`): the log's text is still every token, in order."""
    fake_openai.reply = " ".join(f"word{i}" for i in range(700))
    assert len(tokenize(fake_openai.reply)) > 2 * 256, "pieces past two joins and a rest"
    request = new_request()
    await worker.handle(request)
    events = await stream_of(worker, request.request_id)
    completed = (await log_of(worker))[-1]
    assert text_of(events) == fake_openai.reply
    assert isinstance(completed, Completed) and completed.text == fake_openai.reply


async def test_a_rate_limit_is_retried_before_any_token(
    worker: Worker, fake_openai: FakeOpenAI, new_request: Callable[..., ChatRequest]
) -> None:
    fake_openai.faults.extend([Fault(status=429, retry_after=0.05), Fault(status=500)])
    request = new_request()
    await worker.handle(request)
    events = await stream_of(worker, request.request_id)
    assert text_of(events) == REPLY and events[-1] == Done(reason="stop")
    assert len(fake_openai.requests) == 3
    assert sum(isinstance(e, Started) for e in events) == 3
    completed = (await log_of(worker))[-1]
    assert isinstance(completed, Completed) and (completed.retries, completed.fallbacks) == (2, 0)


async def test_exhausted_retries_fall_back_to_the_next_alias(
    worker: Worker, fake_openai: FakeOpenAI, backup_upstream: FakeOpenAI, new_request: Callable[..., ChatRequest]
) -> None:
    fake_openai.faults.extend([Fault(status=503)] * 3)
    request = new_request()
    await worker.handle(request)
    events = await stream_of(worker, request.request_id)
    assert text_of(events) == "The backup answered."
    assert [e.model for e in events if isinstance(e, Started)][-1] == "backup"
    completed = (await log_of(worker))[-1]
    assert isinstance(completed, Completed) and completed.upstream_model == "backup-model"
    assert (completed.retries, completed.fallbacks) == (2, 1), "three tries of `fast`, then `backup`"


async def test_message_content_is_logged_only_when_the_operator_says_so(worker: Worker, new_request: Callable[..., ChatRequest]) -> None:
    secret = "my account number is 12345"
    with structlog.testing.capture_logs() as quiet:
        await worker.handle(new_request(content=secret))
    assert quiet and not any(secret in str(entry) for entry in quiet)
    worker.settings = msgspec.structs.replace(worker.settings, log_content=True)
    with structlog.testing.capture_logs() as told:
        await worker.handle(new_request(content=secret))
    content = [entry for entry in told if entry["event"] == "generation.content"]
    assert len(content) == 1 and secret in content[0]["prompt"][-1] and content[0]["answer"] == REPLY


async def test_a_failure_after_text_is_not_retried(
    worker: Worker, fake_openai: FakeOpenAI, backup_upstream: FakeOpenAI, new_request: Callable[..., ChatRequest]
) -> None:
    fake_openai.faults.append(Fault(drop_after=2))
    request = new_request()
    await worker.handle(request)
    events = await stream_of(worker, request.request_id)
    assert text_of(events) == "".join(tokenize(REPLY)[:2])
    assert isinstance(events[-2], Error) and events[-2].code == "network"
    assert events[-1] == Done(reason="error")
    assert len(fake_openai.requests) == 1 and not backup_upstream.requests
    failed = (await log_of(worker))[-1]
    assert isinstance(failed, Failed) and failed.code == "network" and failed.text == text_of(events)


class _Defective:
    """The OpenAI adapter with a defect of the kind a bug in one would have: after `after` of its events, a KeyError."""

    name = "openai"

    def __init__(self, adapter: Any, after: int) -> None:
        self.adapter, self.after = adapter, after

    async def stream(self, request: ChatRequest, spec: Any) -> AsyncIterator[Any]:
        events = self.adapter.stream(request, spec)
        for _ in range(self.after):
            yield await anext(events)
        await events.aclose()
        raise KeyError("choices")


@pytest.mark.parametrize("after", [0, 3])
async def test_a_defect_in_the_worker_ends_the_request_at_once_and_is_not_retried(
    worker: Worker, fake_openai: FakeOpenAI, backup_upstream: FakeOpenAI, new_request: Callable[..., ChatRequest], after: int
) -> None:
    """Another worker taking the request over would fail it the same way, after the claim time, and call the provider
    again: it ends here, with the text so far, and is dead-lettered for the operator."""
    worker.providers["openai"] = _Defective(worker.providers["openai"], after)
    request = new_request()
    with structlog.testing.capture_logs() as logged:
        await worker.handle(request)  # returns: the request is finished for good, and its entry is acknowledged
    events = await stream_of(worker, request.request_id)
    error = events[-2]
    assert isinstance(error, Error) and error.code == "internal" and "KeyError" in error.message and "not retried" in error.message
    assert events[-1] == Done(reason="error")
    text = text_of(events)
    assert REPLY.startswith(text) and bool(text) == bool(after), "the text that reached the client stays"
    assert len(fake_openai.requests) == (1 if after else 0), "not retried"
    assert not backup_upstream.requests, "nor sent to a fallback"
    [(_, dead)] = await worker.redis.xrange(worker.keys.dead_letters)
    assert b"KeyError" in dead[b"error"] and request.request_id.encode() in dead[DATA_FIELD_BYTES]
    [defect] = [entry for entry in logged if entry["event"] == "generation.defect"]
    assert isinstance(defect["exc_info"], KeyError)
    failed = (await log_of(worker))[-1]
    assert isinstance(failed, Failed) and failed.code == "internal"


async def test_a_bad_request_is_neither_retried_nor_sent_to_fallbacks(
    worker: Worker, fake_openai: FakeOpenAI, backup_upstream: FakeOpenAI, new_request: Callable[..., ChatRequest]
) -> None:
    fake_openai.faults.append(Fault(status=400, message="Invalid 'stop'"))
    request = new_request()
    await worker.handle(request)
    events = await stream_of(worker, request.request_id)
    assert isinstance(events[-2], Error) and events[-2].code == "bad_request" and "Invalid 'stop'" in events[-2].message
    assert len(fake_openai.requests) == 1 and not backup_upstream.requests


async def test_a_request_past_its_deadline_is_not_generated(
    worker: Worker, fake_openai: FakeOpenAI, new_request: Callable[..., ChatRequest]
) -> None:
    request = new_request(deadline=time.time() - 1)
    await worker.handle(request)
    events = await stream_of(worker, request.request_id)
    assert isinstance(events[0], Error) and events[0].code == "deadline_exceeded"
    assert events[-1] == Done(reason="error") and not fake_openai.requests


async def test_a_slow_answer_is_cut_at_the_deadline(
    worker: Worker, fake_openai: FakeOpenAI, new_request: Callable[..., ChatRequest]
) -> None:
    fake_openai.token_delay_s = 0.2
    request = new_request(deadline=time.time() + 0.5)
    await worker.handle(request)
    events = await stream_of(worker, request.request_id)
    assert isinstance(events[-2], Error) and events[-2].code == "deadline_exceeded"
    assert 0 < len(text_of(events)) < len(REPLY)


async def test_a_provider_without_an_adapter_fails_clearly(worker: Worker, new_request: Callable[..., ChatRequest]) -> None:
    del worker.providers["gemini"]
    request = new_request(model="martian")
    await worker.handle(request)
    events = await stream_of(worker, request.request_id)
    assert isinstance(events[0], Error) and "no adapter for provider `gemini`" in events[0].message


def worker_for(
    redis: aioredis.Redis, namespace: str, http: aiohttp.ClientSession, models: dict[str, dict[str, object]], **provider_settings: Any
) -> Worker:
    settings = ProviderSettings(**{"provider_retries": 0, "retry_base_s": 0.01, "retry_max_s": 0.05, **provider_settings})
    return Worker(redis, Keys(namespace), Registry.parse(registry_toml(models)), build_providers(http), WorkerSettings(), settings)


def fake_model(fake: FakeOpenAI, **fields: object) -> dict[str, object]:
    return {"provider": "openai", "upstream_model": "fake-model", "base_url": fake.base_url, **fields}


async def test_no_first_token_in_time_is_a_timeout(
    redis: aioredis.Redis, namespace: str, http: aiohttp.ClientSession, fake_openai: FakeOpenAI, new_request: Callable[..., ChatRequest]
) -> None:
    fake_openai.token_delay_s = 1.0
    worker = worker_for(redis, namespace, http, {"slow": fake_model(fake_openai, first_token_timeout_s=0.2)}, provider_retries=1)
    request = new_request(model="slow")
    started = time.monotonic()
    await worker.handle(request)
    events = await stream_of(worker, request.request_id)
    assert isinstance(events[-2], Error) and events[-2].code == "timeout"
    assert events[-2].message == "openai: no first token within 0.2s"
    assert len(fake_openai.requests) == 2, "a timeout before any token is retried"
    assert time.monotonic() - started < 1.5


async def test_silence_between_tokens_is_a_timeout(
    redis: aioredis.Redis, namespace: str, http: aiohttp.ClientSession, fake_openai: FakeOpenAI, new_request: Callable[..., ChatRequest]
) -> None:
    fake_openai.token_delay_s = 0.4
    worker = worker_for(redis, namespace, http, {"stutter": fake_model(fake_openai, idle_timeout_s=0.2)}, provider_retries=2)
    request = new_request(model="stutter")
    await worker.handle(request)
    events = await stream_of(worker, request.request_id)
    assert text_of(events) == "You ", "the first token arrived; the second never did in time"
    assert isinstance(events[-2], Error) and events[-2].message == "openai: no token for 0.2s"
    assert len(fake_openai.requests) == 1, "after text reached the client, nothing is retried"


async def test_a_models_system_prompt_is_sent_when_the_request_brings_none(
    redis: aioredis.Redis, namespace: str, http: aiohttp.ClientSession, fake_openai: FakeOpenAI, new_request: Callable[..., ChatRequest]
) -> None:
    worker = worker_for(redis, namespace, http, {"small": fake_model(fake_openai, system_prompt="You are a helpful assistant.")})
    await worker.handle(new_request(model="small", messages=[ChatMessage(role="user", content="Hi")]))
    assert fake_openai.requests[-1]["messages"] == [
        {"role": "system", "content": "You are a helpful assistant."},
        {"role": "user", "content": "Hi"},
    ]
    own = [ChatMessage(role="system", content="Be terse."), ChatMessage(role="user", content="Hi")]
    await worker.handle(new_request(model="small", messages=own))
    assert [m["content"] for m in fake_openai.requests[-1]["messages"]] == ["Be terse.", "Hi"], (
        "the request's own system message stays alone"
    )


async def test_a_context_length_error_falls_back_only_to_a_larger_window(
    redis: aioredis.Redis,
    namespace: str,
    http: aiohttp.ClientSession,
    fake_openai: FakeOpenAI,
    backup_upstream: FakeOpenAI,
    new_request: Callable[..., ChatRequest],
) -> None:
    other = FakeOpenAI(reply="not me")
    server = ThreadedServer(other).start()
    other.base_url = f"{server.url}/v1"
    try:
        models = {
            "small": fake_model(fake_openai, context_window=8192, fallbacks=["same", "big"]),
            "same": fake_model(other, context_window=8192),
            "big": {**fake_model(backup_upstream, context_window=200000)},
        }
        worker = worker_for(redis, namespace, http, models)
        fake_openai.faults.append(Fault(status=400, message="This model's maximum context length is 8192 tokens"))
        request = new_request(model="small")
        await worker.handle(request)
        events = await stream_of(worker, request.request_id)
        assert text_of(events) == "The backup answered."
        assert not other.requests, "a fallback with the same window is skipped"
    finally:
        server.stop()


async def test_max_concurrency_holds_across_workers(
    redis: aioredis.Redis, namespace: str, http: aiohttp.ClientSession, fake_openai: FakeOpenAI, new_request: Callable[..., ChatRequest]
) -> None:
    fake_openai.reply = "one two three four five"
    fake_openai.token_delay_s = 0.03
    models = {"narrow": fake_model(fake_openai, max_concurrency=1)}
    workers = [worker_for(redis, namespace, http, models) for _ in range(2)]
    requests = [new_request(model="narrow") for _ in range(4)]
    await asyncio.gather(*(workers[i % 2].handle(r) for i, r in enumerate(requests)))
    for request in requests:
        assert text_of(await stream_of(workers[0], request.request_id)) == "one two three four five"
    assert fake_openai.most_active == 1


async def test_an_exhausted_rpm_bucket_waits_then_refuses_with_retry_after(
    redis: aioredis.Redis, namespace: str, http: aiohttp.ClientSession, fake_openai: FakeOpenAI, new_request: Callable[..., ChatRequest]
) -> None:
    worker = worker_for(redis, namespace, http, {"metered": fake_model(fake_openai, rpm=2)}, limit_wait_s=0.3)
    requests = [new_request(model="metered") for _ in range(3)]
    for request in requests:
        await worker.handle(request)
    last = await stream_of(worker, requests[-1].request_id)
    assert isinstance(last[-2], Error) and last[-2].code == "rate_limited"
    assert last[-2].retry_after is not None and 25 < last[-2].retry_after <= 30
    assert len(fake_openai.requests) == 2


async def test_tokens_per_minute_are_reserved_then_settled_from_usage(
    redis: aioredis.Redis, namespace: str, http: aiohttp.ClientSession, fake_openai: FakeOpenAI, new_request: Callable[..., ChatRequest]
) -> None:
    worker = worker_for(redis, namespace, http, {"metered": fake_model(fake_openai, tpm=1000)})
    await worker.handle(new_request(model="metered", params={"max_tokens": 500}))
    left = float(await redis.hget(f"{namespace}limits.{{metered}}.tpm", "tokens"))
    used = sum(fake_openai.prompt_tokens(r) for r in fake_openai.requests) + len(tokenize("You said: Hello there"))
    assert 1000 - used - 5 <= left <= 1000 - used + 5, "only what was really used stays taken"
    too_big = new_request(model="metered", params={"max_tokens": 2000})
    await worker.handle(too_big)
    events = await stream_of(worker, too_big.request_id)
    assert isinstance(events[-2], Error) and events[-2].code == "bad_request" and "allows per minute (1000)" in events[-2].message
    assert len(fake_openai.requests) == 1


async def test_a_tool_call_is_streamed_and_logged_whole(
    worker: Worker, fake_openai: FakeOpenAI, new_request: Callable[..., ChatRequest]
) -> None:
    from chatbot_contracts import FunctionCall, ToolCall, ToolCallDelta

    fake_openai.tool_call = ("get_weather", '{"city": "Paris", "unit": "C"}')
    request = new_request(params={"tools": [{"type": "function", "function": {"name": "get_weather"}}]})
    await worker.handle(request)
    events = await stream_of(worker, request.request_id)
    pieces = [e for e in events if isinstance(e, ToolCallDelta)]
    assert pieces[0].name == "get_weather" and "".join(p.arguments for p in pieces) == '{"city": "Paris", "unit": "C"}'
    assert events[-1] == Done(reason="tool_calls")
    completed = (await log_of(worker))[-1]
    assert isinstance(completed, Completed) and completed.text == ""
    assert completed.tool_calls == [
        ToolCall(id=str(pieces[0].id), function=FunctionCall(name="get_weather", arguments='{"city": "Paris", "unit": "C"}'))
    ]


@pytest.mark.parametrize("vendor", ["openai", "anthropic", "gemini", "ollama"])
async def test_every_adapter_retries_a_rate_limit_then_falls_back_after_server_errors(
    vendor: str,
    redis: aioredis.Redis,
    namespace: str,
    http: aiohttp.ClientSession,
    backup_upstream: FakeOpenAI,
    new_request: Callable[..., ChatRequest],
    request: pytest.FixtureRequest,
) -> None:
    fake = request.getfixturevalue(f"fake_{vendor}")
    fake.reply = REPLY
    models = {
        "primary": {"provider": vendor, "upstream_model": "m", "base_url": fake.base_url, "fallbacks": ["backup"]},
        "backup": fake_model(backup_upstream),
    }
    worker = worker_for(redis, namespace, http, models, provider_retries=1)
    fake.faults.append(Fault(status=429, retry_after=0.05))
    first = new_request(model="primary")
    await worker.handle(first)
    assert text_of(await stream_of(worker, first.request_id)) == REPLY
    assert len(fake.requests) == 2, "the rate-limited call is retried once"

    fake.faults.extend([Fault(status=500), Fault(status=500)])
    second = new_request(model="primary")
    await worker.handle(second)
    events = await stream_of(worker, second.request_id)
    assert text_of(events) == "The backup answered."
    assert [e.model for e in events if isinstance(e, Started)] == ["primary", "primary", "backup"]


async def test_generations_are_counted_in_the_workers_metrics(
    worker: Worker, fake_openai: FakeOpenAI, new_request: Callable[..., ChatRequest]
) -> None:
    from prometheus_client import generate_latest

    fake_openai.faults.append(Fault(status=429, retry_after=0.01))
    await worker.handle(new_request())
    fake_openai.faults.append(Fault(status=400, message="nope"))
    await worker.handle(new_request())
    text = generate_latest(worker.metrics.registry).decode()
    assert (
        'gen_ai_client_operation_duration_seconds_count{gen_ai_provider_name="openai",gen_ai_request_model="fast",outcome="completed"} 1.0'
        in text
    )
    assert (
        'gen_ai_client_operation_duration_seconds_count{gen_ai_provider_name="openai",gen_ai_request_model="fast",outcome="failed"} 1.0'
        in text
    )
    assert 'gen_ai_server_time_to_first_token_seconds_count{gen_ai_provider_name="openai",gen_ai_request_model="fast"} 1.0' in text
    assert (
        'gen_ai_client_token_usage_count{gen_ai_provider_name="openai",gen_ai_request_model="fast",gen_ai_token_type="output"} 1.0' in text
    )
    assert 'chatbot_provider_retries_total{error_type="rate_limited"} 1.0' in text
    assert 'chatbot_generation_errors_total{error_type="bad_request"} 1.0' in text
    assert "chatbot_generations_in_flight 0.0" in text


class _Buffered:
    """A provider whose whole answer is already here: its tokens come without a pause for the event loop."""

    name = "openai"

    async def stream(self, request: ChatRequest, spec: Any) -> AsyncIterator[object]:
        for word in ("one ", "two ", "three ", "four ", "five"):
            yield Delta(text=word)
        yield Done(reason="stop")


async def test_the_first_token_is_written_before_the_rest_of_a_buffered_answer_is_read(
    worker: Worker, new_request: Callable[..., ChatRequest]
) -> None:
    worker.providers = {**worker.providers, "openai": _Buffered()}  # type: ignore[dict-item]
    request = new_request()
    await worker.handle(request)
    events = await stream_of(worker, request.request_id)
    deltas = [e.text for e in events if isinstance(e, Delta)]
    assert deltas[0] == "one ", f"the first token waited for the whole answer: {deltas}"
    assert "".join(deltas) == "one two three four five"
    assert isinstance(events[0], Started) and events[-1] == Done(reason="stop")


async def test_a_deployment_at_its_own_limit_is_skipped_for_one_with_room(
    redis: aioredis.Redis,
    namespace: str,
    http: aiohttp.ClientSession,
    fake_openai: FakeOpenAI,
    backup_upstream: FakeOpenAI,
    new_request: Callable[..., ChatRequest],
) -> None:
    """`a` runs one generation at a time and is always preferred; while it runs one, the next goes to `b` at once,
    instead of waiting up to the limit wait (30 s) for `a`'s slot."""
    fake_openai.reply, fake_openai.token_delay_s = "slow " * 20, 0.05
    text = '[models."pair"]\nrouting = "weighted"\n'
    for name, fake, extra in (("a", fake_openai, "weight = 1000\nmax_concurrency = 1\n"), ("b", backup_upstream, "weight = 1\n")):
        text += f'[[models."pair".deployments]]\nname = "{name}"\nprovider = "openai"\nupstream_model = "{name}"\n'
        text += f'base_url = "{fake.base_url}"\n{extra}'
    worker = Worker(redis, Keys(namespace), Registry.parse(text), build_providers(http), WorkerSettings(), ProviderSettings())
    first, second = new_request(model="pair"), new_request(model="pair")
    running = asyncio.create_task(worker.handle(first))
    for _ in range(500):  # until `a` has the first one
        if fake_openai.requests:
            break
        await asyncio.sleep(0.01)
    started = time.monotonic()
    await worker.handle(second)
    assert time.monotonic() - started < 0.5 and not running.done()
    assert text_of(await stream_of(worker, second.request_id)) == "The backup answered."
    await running
    assert text_of(await stream_of(worker, first.request_id)) == "slow " * 20
    assert len(fake_openai.requests) == 1 and len(backup_upstream.requests) == 1
