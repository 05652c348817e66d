"""`chatbot-gateway`: serve the gateway, configured by environment variables."""

from __future__ import annotations

from pathlib import Path

import structlog
import uvicorn

from chatbot_contracts import Registry
from chatbot_contracts.heap import settle_heap
from chatbot_contracts.observability import configure_logging, serve_metrics
from chatbot_contracts.settings import or_exit
from chatbot_contracts.tracing import configure_tracing

from .app import create_app
from .settings import Settings

log = structlog.get_logger()


def main() -> None:
    settings = or_exit(Settings.from_env, "chatbot-gateway")
    configure_logging("gateway", settings.server.log_level)
    configure_tracing("gateway")
    registry = or_exit(lambda: Registry.load(settings.chat.models_file), "chatbot-gateway")
    app = create_app(settings, registry, web_dist=Path(settings.server.web_dist))
    serve_metrics(app.state.metrics.registry, settings.metrics.metrics_host, settings.server.gateway_metrics_port)
    settle_heap()
    log.info("gateway.starting", host=settings.server.gateway_host, port=settings.server.gateway_port, models=len(registry.models))
    uvicorn.run(
        app,
        host=settings.server.gateway_host,
        port=settings.server.gateway_port,
        loop="uvloop",
        http="httptools",
        log_config=None,
        access_log=False,
        timeout_graceful_shutdown=int(settings.server.shutdown_grace_s) or 1,
    )


if __name__ == "__main__":
    main()
