"""The model registry reloads without a restart, in the gateway and the workers; a bad file is refused and the old one kept."""

from __future__ import annotations

import json
import signal
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from chatbot_devtools.fakes import FakeOpenAI
from chatbot_devtools.platform import LocalPlatform, registry_toml

pytestmark = pytest.mark.e2e
REPLY = " ".join(f"w{i}" for i in range(40))


def _registry(fake: FakeOpenAI, *aliases: str) -> str:
    return registry_toml({alias: {"provider": "openai", "upstream_model": "fake-model", "base_url": fake.base_url} for alias in aliases})


def _models(api: httpx.Client) -> list[str]:
    return sorted(model["id"] for model in api.get("/v1/models").json()["data"])


def _until(check: Callable[[], bool], what: str, timeout_s: float = 5.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        assert time.monotonic() < deadline, f"not within {timeout_s}s: {what}"
        time.sleep(0.1)


def _streamed_text(api: httpx.Client, model: str) -> str:
    body = {"model": model, "stream": True, "messages": [{"role": "user", "content": "talk slowly"}]}
    with api.stream("POST", "/v1/chat/completions", json=body) as response:
        assert response.status_code == 200
        chunks = [json.loads(line[6:]) for line in response.iter_lines() if line.startswith("data: {")]
    return "".join(choice["delta"].get("content") or "" for chunk in chunks for choice in chunk["choices"])


def test_a_changed_file_is_served_within_seconds_while_a_stream_runs(
    platform_factory: Callable[..., LocalPlatform], fake_openai: FakeOpenAI
) -> None:
    fake_openai.reply, fake_openai.token_delay_s = REPLY, 0.05  # two seconds of tokens
    platform = platform_factory(_registry(fake_openai, "fake"))
    platform.env["CHATBOT_REGISTRY_POLL_S"] = "0.5"
    url = platform.start_gateway()
    platform.start_worker()
    platform.wait_ready(url)
    api = httpx.Client(base_url=url, headers={"Authorization": f"Bearer {platform.admin_key}"}, timeout=30)

    with ThreadPoolExecutor(1) as pool:
        running = pool.submit(_streamed_text, api, "fake")
        time.sleep(0.3)
        platform.models_file.write_text(_registry(fake_openai, "fake", "fresh"))
        _until(lambda: _models(api) == ["fake", "fresh"], "the gateway lists the new alias")
        assert not running.done(), "the change arrived while the answer was still streaming"
        assert running.result(timeout=30) == REPLY, "the running stream lost nothing"

    def fresh_answers() -> bool:
        response = api.post("/v1/chat/completions", json={"model": "fresh", "messages": [{"role": "user", "content": "hi"}]})
        return response.status_code == 200

    _until(fresh_answers, "a worker serves the new alias")

    platform.models_file.write_text('[models."broken"]\nprovider = "openai"\nupstream_model = 12\n')
    time.sleep(1.5)
    assert _models(api) == ["fake", "fresh"], "a bad file changes nothing"
    assert api.post("/v1/chat/completions", json={"model": "fake", "messages": [{"role": "user", "content": "x"}]}).status_code == 200
    gateway_log = (platform.workdir / "gateway.log").read_text()
    assert "registry.reload_refused" in gateway_log and "upstream_model" in gateway_log


def test_sighup_reloads_at_once(platform_factory: Callable[..., LocalPlatform], fake_openai: FakeOpenAI) -> None:
    platform = platform_factory(_registry(fake_openai, "fake"))
    platform.env["CHATBOT_REGISTRY_POLL_S"] = "3600"
    url = platform.start_gateway()
    api = httpx.Client(base_url=url, headers={"Authorization": f"Bearer {platform.admin_key}"}, timeout=30)
    platform.models_file.write_text(_registry(fake_openai, "fake", "other"))
    time.sleep(0.5)
    assert _models(api) == ["fake"], "no poll for an hour"
    next(p for p in platform.processes if p.service == "gateway").signal(signal.SIGHUP)
    _until(lambda: _models(api) == ["fake", "other"], "SIGHUP reloads", timeout_s=3)
