"""What the conversation service does with inference events (persistence comes with the conversation store)."""

from __future__ import annotations

from collections import Counter

import structlog

from chatbot_contracts import AnyInferenceEvent, Cancelled, Completed, Failed

log = structlog.get_logger()


class EventApplier:
    """Applies the terminal events of generations; for now it records that it saw them."""

    def __init__(self) -> None:
        self.applied: Counter[str] = Counter()

    async def apply(self, event: AnyInferenceEvent) -> None:
        match event:
            case Completed() | Failed() | Cancelled():
                self.applied[type(event).__struct_config__.tag] += 1  # type: ignore[index]
                log.info("conversation.event_applied", request_id=event.request_id, type=type(event).__struct_config__.tag)
            case _:
                pass
