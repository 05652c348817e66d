"""The Grafana dashboard under deploy/ shows only metrics the services really serve, and every service's are on it."""

from __future__ import annotations

import json
import re
from pathlib import Path

from prometheus_client import CollectorRegistry

from chatbot_contracts import Registry
from chatbot_conversation import Settings as ConversationSettings
from chatbot_conversation import create_app as conversation_app
from chatbot_conversation.knowledge.worker import IngestMetrics
from chatbot_devtools.platform import INTERNAL_SECRET
from chatbot_gateway.metrics import GatewayMetrics
from chatbot_inference.metrics import WorkerMetrics
from chatbot_log_collector import Settings as CollectorSettings
from chatbot_log_collector import create_app as collector_app

ROOT = Path(__file__).parents[2]
DASHBOARD = ROOT / "deploy" / "grafana" / "chatbot-llm.json"
MODELS = ROOT / "config" / "models.toml"
SUFFIXES = {"counter": ("_total",), "histogram": ("_bucket", "_sum", "_count"), "gauge": ("",)}


def _served(registry: CollectorRegistry) -> set[str]:
    """Every series name a registry exposes (a counter as `_total`, a histogram as its buckets, sum and count)."""
    return {family.name + suffix for family in registry.collect() for suffix in SUFFIXES.get(family.type, ("",))}


def test_the_dashboard_queries_only_served_metrics(tmp_path: Path) -> None:
    env = {
        "CHATBOT_DATABASE_URL": f"sqlite:///{tmp_path}/c.db",
        "CHATBOT_LOG_DATABASE_URL": f"sqlite:///{tmp_path}/u.db",
        "CHATBOT_INTERNAL_SECRET": INTERNAL_SECRET,
    }
    ingest_registry = CollectorRegistry()
    IngestMetrics(ingest_registry)
    registries = {
        "gateway": GatewayMetrics().registry,
        "worker": WorkerMetrics().registry,
        "conversation": conversation_app(ConversationSettings.from_env(env), Registry.load(MODELS)).state.metrics,
        "log collector": collector_app(CollectorSettings.from_env(env)).state.metrics,
        "ingestion worker": ingest_registry,
    }
    served = {service: _served(registry) for service, registry in registries.items()}
    dashboard = json.loads(DASHBOARD.read_text())
    queried = {
        name
        for panel in dashboard["panels"]
        for target in panel["targets"]
        for name in re.findall(r"\b(?:chatbot|gen_ai)_[a-z0-9_]+", re.sub(r"by \([^)]*\)", "", target["expr"]))  # not label names
    }
    everything = set().union(*served.values())
    assert not queried - everything, f"the dashboard queries what no service serves: {sorted(queried - everything)}"
    for service, names in served.items():
        assert names & queried, f"nothing of the {service}'s metrics is on the dashboard"
    assert len({panel["id"] for panel in dashboard["panels"]}) == len(dashboard["panels"])
