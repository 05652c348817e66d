"""One trace covers a whole turn: the gateway's request, the enqueue, the worker's generation, the provider call, persistence.

The services run in this process (the gateway and the conversation service each on a thread
of its own, the worker on the test's loop) so that one in-memory span exporter sees every span.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from chatbot_contracts import Registry
from chatbot_conversation import Settings as ConversationSettings
from chatbot_conversation import create_app as conversation_app
from chatbot_devtools.fakes import FakeOpenAI
from chatbot_devtools.platform import INTERNAL_SECRET, registry_toml
from chatbot_devtools.serve import ThreadedServer
from chatbot_gateway import Settings as GatewaySettings
from chatbot_gateway import create_app as gateway_app
from chatbot_inference.app import WorkerApp
from chatbot_inference.settings import Settings as WorkerSettings

pytestmark = pytest.mark.e2e
TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"


@pytest.fixture(scope="module")
def spans() -> Iterator[InMemorySpanExporter]:
    """Every span this process ends, kept in memory (the provider is process-wide: installed once)."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    trace.set_tracer_provider(provider)
    yield exporter
    provider.shutdown()


async def test_one_trace_from_the_gateway_through_the_worker_to_persistence(
    spans: InMemorySpanExporter, fake_openai: FakeOpenAI, redis_url: str, namespace: str, tmp_path: Path
) -> None:
    registry_text = registry_toml({"fake": {"provider": "openai", "upstream_model": "fake-model", "base_url": fake_openai.base_url}})
    registry = Registry.parse(registry_text)
    env = {
        "REDIS_URL": redis_url,
        "CHATBOT_REDIS_NAMESPACE": namespace,
        "CHATBOT_DATABASE_URL": f"sqlite:///{tmp_path}/conversations.db",
        "CHATBOT_ADMIN_KEY": "sk-admin-0123456789abcdefghij",
        "CHATBOT_WORKER_NAME": "traced-worker",
        "CHATBOT_METRICS_PORT": "0",
        "CHATBOT_INTERNAL_SECRET": INTERNAL_SECRET,
    }
    conversations = ThreadedServer(conversation_app(ConversationSettings.from_env(env), registry), lifespan="on").start()
    worker = WorkerApp(WorkerSettings.from_env(env), registry)
    running = asyncio.create_task(worker.run())
    try:
        gateway_settings = GatewaySettings.from_env({**env, "CHATBOT_CONVERSATION_URL": conversations.url})
        gateway = ThreadedServer(gateway_app(gateway_settings, registry), lifespan="on").start()
        async with httpx.AsyncClient(base_url=gateway.url, timeout=30) as client:
            headers = {"Authorization": "Bearer sk-admin-0123456789abcdefghij"}
            conversation = (await client.post("/api/v1/conversations", json={"model": "fake"}, headers=headers)).json()
            incoming = f"00-{TRACE_ID}-00f067aa0ba902b7-01"
            turn = await client.post(
                f"/api/v1/conversations/{conversation['id']}/messages",
                json={"content": "Trace me"},
                headers={**headers, "traceparent": incoming},
            )
            assert turn.status_code == 200 and "event: done" in turn.text
            for _ in range(200):
                if any(span.name == "persist chat" for span in spans.get_finished_spans()):
                    break
                await asyncio.sleep(0.05)
        gateway.stop()
    finally:
        worker.stopping.set()
        await asyncio.wait_for(running, 30)
        conversations.stop()

    turn_spans = [span for span in spans.get_finished_spans() if f"{span.context.trace_id:032x}" == TRACE_ID]
    by_name: dict[str, ReadableSpan] = {span.name: span for span in turn_spans}
    server = by_name["POST /api/v1/conversations/{conversation_id:str}/messages"]
    send, generate, provider, persist = (by_name[n] for n in ("chat.requests send", "generate fake", "chat fake-model", "persist chat"))
    assert server.parent is not None and server.parent.span_id == 0x00F067AA0BA902B7, "the caller's traceparent is the root"
    assert send.parent is not None and send.parent.span_id == server.context.span_id
    assert generate.parent is not None and generate.parent.span_id == send.context.span_id, "carried through chat.requests"
    assert provider.parent is not None and provider.parent.span_id == generate.context.span_id
    assert persist.parent is not None and persist.parent.span_id == generate.context.span_id, "carried through inference.events"
    assert (server.kind, send.kind, generate.kind, provider.kind, persist.kind) == (
        trace.SpanKind.SERVER, trace.SpanKind.PRODUCER, trace.SpanKind.CONSUMER, trace.SpanKind.CLIENT, trace.SpanKind.CONSUMER,
    )  # fmt: skip
    assert provider.attributes is not None and provider.attributes["gen_ai.system"] == "openai"
    assert provider.attributes["gen_ai.usage.output_tokens"] > 0
