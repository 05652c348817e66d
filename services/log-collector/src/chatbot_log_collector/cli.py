"""`chatbot-log-collector`: run the log collector, configured by environment variables."""

from __future__ import annotations

import uvicorn

from chatbot_contracts.heap import settle_heap
from chatbot_contracts.observability import configure_logging, serve_metrics
from chatbot_contracts.settings import or_exit
from chatbot_contracts.tracing import configure_tracing

from .app import create_app
from .settings import Settings


def main() -> None:
    settings = or_exit(Settings.from_env, "chatbot-log-collector")
    configure_logging("log-collector", settings.server.log_level)
    configure_tracing("log-collector")
    app = create_app(settings)
    serve_metrics(app.state.metrics, settings.metrics.metrics_host, settings.server.log_collector_metrics_port)
    settle_heap()
    uvicorn.run(
        app,
        host=settings.server.log_collector_host,
        port=settings.server.log_collector_port,
        loop="uvloop",
        http="httptools",
        log_config=None,
        access_log=False,
    )


if __name__ == "__main__":
    main()
