"""Settings come from environment variables, with clear errors for bad values."""

from __future__ import annotations

import msgspec
import pytest

from chatbot_contracts.redis import RedisSettings
from chatbot_contracts.settings import SettingsError, from_env


class Example(msgspec.Struct, kw_only=True, frozen=True):
    port: int = 8000
    name: str = "x"
    url: str = msgspec.field(name="REDIS_URL", default="redis://default")


def test_fields_read_their_own_variables() -> None:
    settings = from_env(Example, environ={"CHATBOT_PORT": "9001", "REDIS_URL": "redis://elsewhere:1/0", "PORT": "1"})
    assert settings == Example(port=9001, name="x", url="redis://elsewhere:1/0")


def test_a_bad_value_names_the_variable() -> None:
    with pytest.raises(SettingsError, match=r"CHATBOT_PORT=.eighty.: Expected `int`, got `str`"):
        from_env(Example, environ={"CHATBOT_PORT": "eighty"})


def test_redis_settings_default_to_a_local_server() -> None:
    assert from_env(RedisSettings, environ={}).url == "redis://127.0.0.1:6379/0"
    assert from_env(RedisSettings, environ={"CHATBOT_REDIS_NAMESPACE": "a:"}).redis_namespace == "a:"
