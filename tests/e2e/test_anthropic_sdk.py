"""The official `anthropic` SDK against the gateway, answered by any configured model (here an OpenAI-compatible one)."""

from __future__ import annotations

from collections.abc import Callable

import anthropic
import pytest

from chatbot_devtools.fakes import FakeOpenAI, Fault, tokenize
from chatbot_devtools.platform import LocalPlatform

pytestmark = pytest.mark.e2e

REPLY = "Any model, Anthropic's API. "


@pytest.fixture
def claude(platform_factory: Callable[..., LocalPlatform], fake_registry: str, fake_openai: FakeOpenAI) -> anthropic.Anthropic:
    fake_openai.reply = REPLY
    platform = platform_factory(fake_registry)
    url = platform.start_gateway()
    platform.start_worker(CHATBOT_PROVIDER_RETRIES="0")
    platform.wait_ready(url)
    return anthropic.Anthropic(base_url=url, api_key=platform.admin_key, max_retries=0, timeout=30)


def test_the_anthropic_sdk_streams_from_any_model(claude: anthropic.Anthropic, fake_openai: FakeOpenAI) -> None:
    with claude.messages.stream(
        model="fake", max_tokens=64, system="Be brief.", messages=[{"role": "user", "content": "Hello there"}]
    ) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert text == REPLY
    assert final.stop_reason == "end_turn" and final.model == "fake"
    assert final.usage.output_tokens == len(tokenize(REPLY))
    assert final.usage.input_tokens == FakeOpenAI.prompt_tokens(fake_openai.requests[-1])
    sent = fake_openai.requests[-1]
    assert sent["messages"] == [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hello there"}]
    assert sent["max_tokens"] == 64


def test_the_anthropic_sdk_reads_a_whole_message(claude: anthropic.Anthropic) -> None:
    message = claude.messages.create(
        model="fake", max_tokens=64, messages=[{"role": "user", "content": [{"type": "text", "text": "Hi"}]}], stop_sequences=["END"]
    )
    assert message.content[0].type == "text" and message.content[0].text == REPLY
    assert message.stop_reason == "end_turn" and message.usage.output_tokens == len(tokenize(REPLY))


def test_errors_reach_the_anthropic_sdk_in_its_own_format(claude: anthropic.Anthropic, fake_openai: FakeOpenAI) -> None:
    with pytest.raises(anthropic.NotFoundError, match="the model `nope` does not exist"):
        claude.messages.create(model="nope", max_tokens=10, messages=[{"role": "user", "content": "Hi"}])
    with pytest.raises(anthropic.BadRequestError, match="`document` content blocks are not supported"):
        claude.messages.create(
            model="fake",
            max_tokens=10,
            messages=[
                {"role": "user", "content": [{"type": "document", "source": {"type": "text", "media_type": "text/plain", "data": "x"}}]}
            ],
        )
    fake_openai.faults.append(Fault(status=429, retry_after=3, message="slow down"))
    with pytest.raises(anthropic.RateLimitError, match="rate limiting the platform") as caught:
        claude.messages.create(model="fake", max_tokens=10, messages=[{"role": "user", "content": "Hi"}])
    assert caught.value.response.headers["retry-after"] == "3"
    assert caught.value.body["error"]["type"] == "rate_limit_error"  # type: ignore[index]
    fake_openai.faults.append(Fault(error_after=2, message="melted"))
    with (
        pytest.raises(anthropic.APIStatusError, match="provider failed to answer"),
        claude.messages.stream(model="fake", max_tokens=10, messages=[{"role": "user", "content": "Hi"}]) as stream,
    ):
        stream.until_done()
    with pytest.raises(anthropic.AuthenticationError):
        anthropic.Anthropic(base_url=str(claude.base_url), api_key="sk-wrong", max_retries=0).messages.create(
            model="fake", max_tokens=10, messages=[{"role": "user", "content": "Hi"}]
        )
