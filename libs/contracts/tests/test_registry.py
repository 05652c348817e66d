"""The model registry: a good file loads, a bad one is refused naming the key and the line."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from chatbot_contracts import Registry, RegistryError

GOOD = """\
[models."fast"]
provider = "openai"
upstream_model = "gpt-4o-mini"
base_url = "https://example.invalid/v1"
api_key_env = "OPENAI_API_KEY"
context_window = 128000
max_output_tokens = 4096
input_usd_per_mtok = 0.15
output_usd_per_mtok = 0.60
fallbacks = ["slow"]

[models.slow]
provider = "anthropic"
upstream_model = "claude-haiku"
"""


def test_a_good_registry_loads_with_its_fallback_chain(tmp_path: Path) -> None:
    path = tmp_path / "models.toml"
    path.write_text(GOOD)
    registry = Registry.load(path)
    assert set(registry) == {"fast", "slow"}
    fast = registry.get("fast")
    assert fast is not None and fast.upstream_model == "gpt-4o-mini" and fast.context_window == 128000
    assert [alias for alias, _ in registry.chain("fast")] == ["fast", "slow"]
    assert fast.cost_usd(1_000_000, 1_000_000) == pytest.approx(0.75)


def test_the_shipped_registry_is_valid() -> None:
    registry = Registry.load(Path(__file__).parents[3] / "config" / "models.toml")
    assert len(registry.models) > 0


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            GOOD.replace("context_window = 128000", 'context_window = "big"'),
            "m.toml:6: `models.fast.context_window`: Expected `int`, got `str`",
        ),
        (
            GOOD.replace("max_output_tokens = 4096", "max_output_tokens = 0"),
            "m.toml:7: `models.fast.max_output_tokens`: Expected `int` >= 1",
        ),
        (
            GOOD.replace('provider = "anthropic"', 'provider = "telepathy"'),
            "m.toml:13: `models.slow.provider`: Invalid enum value 'telepathy'",
        ),
        (GOOD + "colour = 3\n", "m.toml:15: `models.slow.colour`: Object contains unknown field `colour`"),
        (GOOD.replace('upstream_model = "claude-haiku"\n', ""), "m.toml:12: `models.slow`: Object missing required field `upstream_model`"),
        (GOOD.replace('fallbacks = ["slow"]', 'fallbacks = ["nope"]'), "m.toml:10: `models.fast.fallbacks` names unknown alias 'nope'"),
        (GOOD.replace('fallbacks = ["slow"]', 'fallbacks = ["fast"]'), "m.toml:10: `models.fast.fallbacks` names itself"),
        ('title = "x"\n' + GOOD, "m.toml:1: unknown key `title`"),
        (GOOD.replace('"fast"', f'"{"f" * 201}"'), f"m.toml:1: the alias `{'f' * 40}…` is longer than 200 characters"),
        ("[models\n", "m.toml: invalid TOML: Expected ']' at the end of a table declaration (at line 1"),
        ("", "m.toml:1: no `[models"),
    ],
)
def test_a_bad_registry_is_refused_naming_key_and_line(text: str, expected: str) -> None:
    with pytest.raises(RegistryError) as caught:
        Registry.parse(text, source="m.toml")
    assert str(caught.value).startswith(expected)


def test_a_missing_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(RegistryError, match=r"cannot read model registry .*nope.toml"):
        Registry.load(tmp_path / "nope.toml")


def test_a_llamacpp_model_must_say_where_its_weights_are() -> None:
    with pytest.raises(RegistryError, match=r"m.toml:1: `models.local`: a llamacpp model needs `model_path` or `model_package`"):
        Registry.parse('[models.local]\nprovider = "llamacpp"\nupstream_model = "gemma"\n', source="m.toml")


def test_what_a_provider_cannot_do_is_named() -> None:
    from chatbot_contracts import GenerationParams
    from chatbot_contracts.capabilities import refusal

    registry = Registry.parse(GOOD)
    slow = registry.models["slow"]
    assert refusal("slow", slow, GenerationParams(temperature=0.5, max_tokens=10, stop=["x"])) is None
    assert refusal("slow", slow, GenerationParams(seed=7)) == ("seed", "`seed` is not supported by model `slow` (provider anthropic)")
    assert refusal("slow", slow, GenerationParams(temperature=1.5)) == (
        "temperature",
        "model `slow` (provider anthropic) takes `temperature` from 0 to 1",
    )
    assert refusal("fast", registry.models["fast"], GenerationParams(seed=7, temperature=1.5)) is None


DEPLOYED = """
[models."gpt-4o-mini"]
context_window = 128000
routing = "least-busy"
input_usd_per_mtok = 0.15
rpm = 100
[[models."gpt-4o-mini".deployments]]
provider = "openai"
upstream_model = "gpt-4o-mini"
api_key_env = "OPENAI_KEY_A"
weight = 3
rpm = 5000
[[models."gpt-4o-mini".deployments]]
name = "vllm"
provider = "openai"
base_url = "https://my-vllm.internal/v1"
upstream_model = "llama-3.1-8b"
input_usd_per_mtok = 0.0
"""


def test_an_alias_with_deployments_routes_over_each_with_what_it_sets_and_the_rest_from_the_alias() -> None:
    registry = Registry.parse(DEPLOYED)
    first, vllm = registry.routes("gpt-4o-mini")
    assert (first.name, first.weight, first.deployment) == ("gpt-4o-mini#1", 3.0, True)
    assert (first.spec.upstream_model, first.spec.api_key_env, first.spec.rpm, first.spec.input_usd_per_mtok) == (
        "gpt-4o-mini",
        "OPENAI_KEY_A",
        5000,
        0.15,
    )
    assert (vllm.name, vllm.weight, vllm.spec.base_url, vllm.spec.upstream_model) == (
        "vllm",
        1.0,
        "https://my-vllm.internal/v1",
        "llama-3.1-8b",
    )
    assert vllm.spec.api_key_env is None, "a deployment's own fields are its own, never another deployment's"
    assert (vllm.spec.rpm, vllm.spec.input_usd_per_mtok, vllm.spec.context_window) == (100, 0.0, 128000)
    assert registry.get("gpt-4o-mini").routing == "least-busy"  # type: ignore[union-attr]
    assert registry.routes("gpt-4o-mini")[0].spec.deployments == []


def test_a_single_provider_alias_is_its_own_one_route() -> None:
    [route] = Registry.parse(GOOD).routes("fast")
    assert (route.name, route.deployment, route.spec) == ("fast", False, Registry.parse(GOOD).get("fast"))


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (
            lambda t: t.replace("routing = ", 'provider = "openai"\nrouting = '),
            "m.toml:4: `models.gpt-4o-mini.provider`: an alias with `deployments` sets `provider` on each deployment",
        ),
        (
            lambda t: t.replace('name = "vllm"', 'name = "gpt-4o-mini#1"'),
            "m.toml:14: `models.gpt-4o-mini.deployments.1`: two deployments are named 'gpt-4o-mini#1'",
        ),
        (lambda t: t.replace("weight = 3", "weight = 0"), "m.toml:11: `models.gpt-4o-mini.deployments.0.weight`: Expected `float` > 0.0"),
        (
            lambda t: t.replace('routing = "least-busy"', 'routing = "fastest"'),
            "m.toml:4: `models.gpt-4o-mini.routing`: Invalid enum value 'fastest'",
        ),
    ],
)
def test_bad_deployments_are_refused_naming_key_and_line(change: Callable[[str], str], expected: str) -> None:
    with pytest.raises(RegistryError) as caught:
        Registry.parse(change(DEPLOYED), source="m.toml")
    assert str(caught.value).startswith(expected)
