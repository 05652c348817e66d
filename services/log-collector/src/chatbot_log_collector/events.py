"""What the log collector does with inference events (the event store and aggregates come with its own issue)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter

from chatbot_contracts import AnyInferenceEvent, Cancelled, Completed, Failed


class EventCounter:
    """Counts events by type, and tokens and cost by model, as Prometheus metrics."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.events = Counter("chatbot_log_collector_events", "Inference events consumed", ["type"], registry=registry)
        self.tokens = Counter(
            "chatbot_log_collector_tokens", "Tokens reported by finished generations", ["model", "type"], registry=registry
        )
        self.cost = Counter("chatbot_log_collector_cost_usd", "Cost of finished generations", ["model"], registry=registry)

    def apply(self, event: AnyInferenceEvent) -> None:
        self.events.labels(type=type(event).__struct_config__.tag).inc()
        match event:
            case Completed(usage=usage) | Failed(usage=usage) | Cancelled(usage=usage) if usage is not None:
                self.tokens.labels(model=event.model, type="input").inc(usage.input_tokens)
                self.tokens.labels(model=event.model, type="output").inc(usage.output_tokens)
                self.cost.labels(model=event.model).inc(usage.cost_usd)
            case _:
                pass
