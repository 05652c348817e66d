"""What Claude Code and other Anthropic clients send beyond the basics (`thinking`, `metadata`, `cache_control`,
`anthropic-beta`): passed on to an Anthropic model, dropped (or, for `thinking`, refused by name) for any other."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import anthropic
import pytest

from chatbot_devtools.fakes import FakeAnthropic, FakeOpenAI
from chatbot_devtools.platform import LocalPlatform, registry_toml

pytestmark = pytest.mark.e2e

EPHEMERAL = {"type": "ephemeral"}
BETAS = "interleaved-thinking-2025-05-14,fine-grained-tool-streaming-2025-05-14"
TOOLS: Any = [
    {"name": "read_file", "description": "Read a file", "input_schema": {"type": "object", "properties": {"path": {"type": "string"}}}},
    {"name": "list_files", "input_schema": {"type": "object", "properties": {}}, "cache_control": EPHEMERAL},
]
SYSTEM: Any = [{"type": "text", "text": "You are a coding assistant."}, {"type": "text", "text": "Be terse.", "cache_control": EPHEMERAL}]
QUESTION: Any = [{"role": "user", "content": [{"type": "text", "text": "What is in this folder?", "cache_control": EPHEMERAL}]}]


@pytest.fixture
def claude(platform_factory: Callable[..., LocalPlatform], fake_openai: FakeOpenAI, fake_anthropic: FakeAnthropic) -> anthropic.Anthropic:
    registry = registry_toml(
        {
            "gpt": {"provider": "openai", "upstream_model": "gpt-fake", "base_url": fake_openai.base_url},
            "claude": {"provider": "anthropic", "upstream_model": "claude-fake", "base_url": fake_anthropic.base_url},
        }
    )
    platform = platform_factory(registry)
    url = platform.start_gateway()
    platform.start_worker(CHATBOT_PROVIDER_RETRIES="0")
    platform.wait_ready(url)
    fake_openai.reply = fake_anthropic.reply = "A few files. "
    return anthropic.Anthropic(base_url=url, api_key=platform.admin_key, max_retries=0, timeout=30)


def test_thinking_cache_control_metadata_and_betas_reach_an_anthropic_model(
    claude: anthropic.Anthropic, fake_anthropic: FakeAnthropic
) -> None:
    thinking: Any = {"type": "enabled", "budget_tokens": 2048}
    with claude.messages.stream(
        model="claude",
        max_tokens=4096,
        system=SYSTEM,
        tools=TOOLS,
        messages=QUESTION,
        thinking=thinking,
        metadata={"user_id": "user-42"},
        extra_headers={"anthropic-beta": BETAS},
    ) as stream:
        final = stream.get_final_message()
    thought, answer = final.content
    assert thought.type == "thinking" and thought.thinking == fake_anthropic.thought and thought.signature.startswith("sig-")
    assert answer.type == "text" and answer.text == "A few files. "

    sent, headers = fake_anthropic.requests[-1], fake_anthropic.headers[-1]
    assert sent["thinking"] == thinking and sent["metadata"] == {"user_id": "user-42"}
    assert headers["anthropic-beta"] == BETAS
    assert sent["system"] == [{"type": "text", "text": "You are a coding assistant.\nBe terse.", "cache_control": EPHEMERAL}]
    assert sent["tools"][-1]["cache_control"] == EPHEMERAL and "cache_control" not in sent["tools"][0]
    assert sent["messages"][-1]["content"] == [{"type": "text", "text": "What is in this folder?", "cache_control": EPHEMERAL}]

    turns: Any = [
        *QUESTION,
        {"role": "assistant", "content": [block.model_dump(exclude_none=True) for block in final.content]},
        {"role": "user", "content": "And the largest one?"},
    ]
    whole = claude.messages.create(model="claude", max_tokens=4096, messages=turns, thinking=thinking)
    assert [block.type for block in whole.content] == ["thinking", "text"]
    back = fake_anthropic.requests[-1]["messages"][1]["content"]
    assert back[0] == {"type": "thinking", "thinking": thought.thinking, "signature": thought.signature}, (
        "the signed reasoning goes back as it came"
    )
    assert back[1] == {"type": "text", "text": "A few files. "}


def test_another_providers_model_drops_what_it_has_no_use_for_and_refuses_thinking(
    claude: anthropic.Anthropic, fake_openai: FakeOpenAI
) -> None:
    with pytest.raises(anthropic.BadRequestError) as refused:
        claude.messages.create(model="gpt", max_tokens=100, messages=QUESTION, thinking={"type": "enabled", "budget_tokens": 1024})
    assert "`thinking` is not supported by model `gpt`" in str(refused.value)
    assert not fake_openai.requests

    answer = claude.messages.create(
        model="gpt",
        max_tokens=100,
        system=SYSTEM,
        tools=TOOLS,
        messages=QUESTION,
        metadata={"user_id": "user-42"},
        extra_headers={"anthropic-beta": BETAS},
    )
    assert answer.content[0].type == "text" and answer.content[0].text == "A few files. "
    sent, headers = fake_openai.requests[-1], fake_openai.headers[-1]
    assert "anthropic-beta" not in headers
    assert "cache_control" not in json.dumps(sent) and "user-42" not in json.dumps(sent)
    assert sent["messages"][0] == {"role": "system", "content": "You are a coding assistant.\nBe terse."}
