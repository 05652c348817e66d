"""The gateway serves the built web UI: its files, and its index.html at the UI's own addresses, without a key."""

from __future__ import annotations

from pathlib import Path

from litestar.testing import AsyncTestClient

from chatbot_gateway import create_app
from chatbot_gateway.web import CONTENT_SECURITY_POLICY

from .conftest import REGISTRY, settings_for

INDEX = "<!doctype html><title>Chatbot-LLM</title><div id=root></div>"


def built_ui(tmp_path: Path) -> Path:
    dist = tmp_path / "dist"
    (dist / "assets").mkdir(parents=True)
    (dist / "index.html").write_text(INDEX)
    (dist / "assets" / "index-abc.js").write_text("console.log('ui')")
    return dist


async def test_the_ui_and_its_pages_are_served_without_a_key(tmp_path: Path, redis_url: str, namespace: str) -> None:
    settings = settings_for(redis_url, namespace, CHATBOT_DATABASE_URL=f"sqlite:///{tmp_path}/keys.db")
    async with AsyncTestClient(app=create_app(settings, REGISTRY, web_dist=built_ui(tmp_path))) as client:
        for path in ["/", "/c/4c0ffee", "/usage", "/shared/tok-123"]:
            response = await client.get(path)
            assert response.status_code == 200, path
            assert response.text == INDEX, path
            assert response.headers["content-type"].startswith("text/html"), path
            assert response.headers["content-security-policy"] == CONTENT_SECURITY_POLICY, path
        script = await client.get("/assets/index-abc.js")
        assert script.status_code == 200 and script.text == "console.log('ui')"
        # The API keeps its own answers: a key is still required, and unknown paths are still 404.
        assert (await client.get("/api/v1/conversations")).status_code == 401
        assert (await client.get("/c/one/two")).status_code == 404


async def test_without_a_build_the_gateway_serves_the_api_alone(tmp_path: Path, redis_url: str, namespace: str) -> None:
    settings = settings_for(redis_url, namespace, CHATBOT_DATABASE_URL=f"sqlite:///{tmp_path}/keys.db")
    async with AsyncTestClient(app=create_app(settings, REGISTRY, web_dist=tmp_path / "missing")) as client:
        for path in ["/", "/usage"]:
            response = await client.get(path)
            assert response.status_code == 404 and f"no route GET {path}" in response.text
        assert (await client.get("/healthz")).status_code == 200
