"""The worker's Prometheus metrics (served on its own port). Names follow the OpenTelemetry GenAI conventions
where they define one; labels are low-cardinality (no request ids, no keys)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

_SECONDS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)
_TOKENS = (1, 4, 16, 64, 256, 1024, 4096, 16384, 65536, 262144)


class WorkerMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        model = ["gen_ai_request_model", "gen_ai_provider_name"]
        self.in_flight = Gauge("chatbot_generations_in_flight", "Generations running in this worker", registry=r)
        self.queue_wait = Histogram("chatbot_queue_wait_seconds", "Time a request waited for a worker", buckets=_SECONDS, registry=r)
        self.time_to_first_token = Histogram(
            "gen_ai_server_time_to_first_token_seconds", "Time from a provider call to its first token", model, buckets=_SECONDS, registry=r
        )
        self.time_per_output_token = Histogram(
            "gen_ai_server_time_per_output_token_seconds",
            "Time between output tokens after the first, per generation",
            model,
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 1.0),
            registry=r,
        )
        self.duration = Histogram(
            "gen_ai_client_operation_duration_seconds",
            "Duration of a generation, by how it ended",
            [*model, "outcome"],
            buckets=_SECONDS,
            registry=r,
        )
        self.tokens = Histogram(
            "gen_ai_client_token_usage", "Tokens of a generation, by type", [*model, "gen_ai_token_type"], buckets=_TOKENS, registry=r
        )
        self.errors = Counter("chatbot_generation_errors", "Failed generations, by error class", ["error_type"], registry=r)
        self.retries = Counter("chatbot_provider_retries", "Provider calls retried, by error class", ["error_type"], registry=r)
        self.fallbacks = Counter("chatbot_fallbacks", "Generations moved on to a fallback model", registry=r)
        self.deployment_calls = Counter(
            "chatbot_deployment_calls",
            "Provider calls per model and deployment, by outcome (ok or the error class)",
            ["model", "deployment", "outcome"],
            registry=r,
        )
        self.deployment_ttft = Histogram(
            "chatbot_deployment_time_to_first_token_seconds",
            "Time from a deployment's call to its first token, per model and deployment (aliases with deployments)",
            ["model", "deployment"],
            buckets=_SECONDS,
            registry=r,
        )
        self.cooldowns = Counter(
            "chatbot_deployment_cooldowns", "Deployments cooled down after failures, by this worker", ["model", "deployment"], registry=r
        )
        self.claims = Counter("chatbot_claimed_requests", "Requests taken over from a worker that died", registry=r)
        self.cancellations = Counter("chatbot_cancelled_generations", "Generations stopped by their client", registry=r)
        self.rewritten = Counter(
            "chatbot_stream_entries_rewritten",
            "Stream entries written again after Redis lost them (a failover's replication lag)",
            registry=r,
        )
