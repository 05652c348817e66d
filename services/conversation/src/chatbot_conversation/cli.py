"""`chatbot-conversation`: run the conversation service, configured by environment variables."""

from __future__ import annotations

import uvicorn

from chatbot_contracts import Registry
from chatbot_contracts.heap import settle_heap
from chatbot_contracts.observability import configure_logging, serve_metrics
from chatbot_contracts.settings import or_exit
from chatbot_contracts.tracing import configure_tracing

from .app import create_app
from .settings import Settings


def main() -> None:
    settings = or_exit(Settings.from_env, "chatbot-conversation")
    configure_logging("conversation", settings.server.log_level)
    configure_tracing("conversation")
    registry = or_exit(lambda: Registry.load(settings.store.models_file), "chatbot-conversation")
    app = create_app(settings, registry)
    serve_metrics(app.state.metrics, settings.metrics.metrics_host, settings.server.conversation_metrics_port)
    settle_heap()
    uvicorn.run(
        app,
        host=settings.server.conversation_host,
        port=settings.server.conversation_port,
        loop="uvloop",
        http="httptools",
        log_config=None,
        access_log=False,
    )


if __name__ == "__main__":
    main()
