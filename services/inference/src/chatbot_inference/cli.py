"""`chatbot-inference`: run one inference worker, configured by environment variables."""

from __future__ import annotations

import structlog
import uvloop

from chatbot_contracts import Registry
from chatbot_contracts.heap import settle_heap
from chatbot_contracts.observability import configure_logging
from chatbot_contracts.settings import or_exit
from chatbot_contracts.tracing import configure_tracing

from .app import WorkerApp
from .settings import Settings

log = structlog.get_logger()


def main() -> None:
    settings = or_exit(Settings.from_env, "chatbot-inference")
    configure_logging("inference", settings.worker.log_level)
    configure_tracing("inference")
    registry = or_exit(lambda: Registry.load(settings.worker.models_file), "chatbot-inference")

    async def run() -> None:
        app = WorkerApp(settings, registry)
        settle_heap()
        await app.run()

    uvloop.run(run())


if __name__ == "__main__":
    main()
