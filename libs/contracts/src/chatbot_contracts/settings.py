"""Settings read from environment variables: one Struct per concern, one variable per field."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from typing import TypeVar

import msgspec

S = TypeVar("S", bound=msgspec.Struct)
T = TypeVar("T")


class SettingsError(ValueError):
    """An environment variable holds a value its setting cannot take."""


def from_env(cls: type[S], prefix: str = "CHATBOT_", environ: dict[str, str] | None = None) -> S:
    """Build `cls` from `PREFIX<FIELD>` variables (upper case); unset ones keep their defaults.

    A field may name its variable explicitly with `msgspec.field(name=...)`, e.g. `REDIS_URL`.
    """
    env = os.environ if environ is None else environ
    values: dict[str, str] = {}
    variables: dict[str, str] = {}
    for field in msgspec.structs.fields(cls):
        var = field.encode_name if field.encode_name != field.name else prefix + field.name.upper()
        variables[field.encode_name] = var
        if var in env:
            values[field.encode_name] = env[var]
    try:
        return msgspec.convert(values, cls, strict=False)
    except msgspec.ValidationError as exc:
        message, _, path = str(exc).partition(" - at `$.")
        var = variables.get(path.rstrip("`"), path.rstrip("`"))
        raise SettingsError(f"{var}={values.get(path.rstrip('`'), '')!r}: {message}") from exc


def or_exit(loader: Callable[[], T], program: str) -> T:
    """Run a settings or configuration loader; on a `ValueError`, print it as `program: message` and exit 2."""
    try:
        return loader()
    except ValueError as exc:
        print(f"{program}: {exc}", file=sys.stderr)
        raise SystemExit(2) from exc
