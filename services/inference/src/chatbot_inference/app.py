"""The worker process: the reader of `chat.requests` (group `inference`) and the tasks that keep it honest.

- the reader takes new requests, and takes over requests whose worker died (XAUTOCLAIM), as many as fit;
- the claims of running generations are refreshed, so long answers are never taken over;
- cancel signals arrive on a Pub/Sub channel and stop the generation at once;
- a consumer group that Redis lost (it restarted empty) is made again;
- SIGTERM stops taking work, lets running generations finish for a grace period, then leaves
  the rest unacknowledged for another worker.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import time
from pathlib import Path

import msgspec
import redis.exceptions
import structlog

from chatbot_contracts import INFERENCE_GROUP, Registry, chat_request_decoder
from chatbot_contracts.consumers import ensure_groups
from chatbot_contracts.observability import serve_metrics
from chatbot_contracts.redis import TRANSIENT, connect, raise_refused
from chatbot_contracts.registry import RegistryWatcher

from .providers import build_providers
from .providers.http import client_session
from .queue import QueueReader
from .settings import Settings
from .sink import TakenOver
from .worker import Worker

log = structlog.get_logger()


class WorkerApp:
    """One worker process."""

    def __init__(self, settings: Settings, registry: Registry) -> None:
        self.settings = settings
        self.keys = settings.redis.keys()
        self.name = settings.worker.consumer_name
        self.redis = connect(settings.redis)
        self.http = client_session(
            settings.providers.connect_timeout_s, settings.providers.provider_connections or settings.worker.worker_concurrency
        )
        self.registry_file = registry.source if Path(registry.source).is_file() else None
        """Reloaded when it changes (a registry made in memory, in tests, is not)."""
        self.writer = connect(settings.redis, timed_replies=False, resend=False)
        """The request streams' writes: rounds timed whole, not reply by reply, never sent twice by the client (a failed
        round's streams are repaired from what Redis holds of them, `SharedPipeline`)."""
        self.worker = Worker(
            self.redis,
            self.keys,
            registry,
            build_providers(self.http),
            settings.worker,
            settings.providers,
            writer=self.writer,
            write_within_s=settings.redis.redis_socket_timeout_s,
        )
        self.stopping = asyncio.Event()
        self.reader = QueueReader(
            self.redis,
            self.keys.requests_partitions,
            INFERENCE_GROUP,
            self.name,
            self.on_request,
            slots=settings.worker.worker_concurrency,
            claim_idle_s=settings.worker.claim_idle_s,
        )

    async def on_request(self, stream: str, entry_id: str, payload: bytes) -> None:
        try:
            request = chat_request_decoder.decode(payload)
        except msgspec.MsgspecError as exc:
            await self.worker.refuse(payload, f"the request could not be read: {exc}")
            await self.redis.xack(stream, INFERENCE_GROUP, entry_id)
            return
        with structlog.contextvars.bound_contextvars(
            request_id=request.request_id, model=request.model, key_id=request.key_id, conversation_id=request.conversation_id
        ):
            try:
                await self.worker.handle(request, entry_id)
            except TakenOver as skipped:
                log.info("generation.left_to_owner", reason=str(skipped))
                return
            except TRANSIENT as exc:
                # Its stream could not be written (Redis restarting, a cluster's master being replaced): left
                # unacknowledged for a takeover, which Redis's trouble does not count against the request's attempts.
                log.warning("generation.abandoned", reason="redis", error=type(exc).__name__, exc_info=exc)
                with contextlib.suppress(*TRANSIENT):
                    await self.worker.spare_attempt(request.request_id)
                return
        await self._acknowledge(stream, entry_id)

    async def _acknowledge(self, stream: str, entry_id: str) -> None:
        """XACK, tried again while Redis is away for `CHATBOT_REDIS_OUTAGE_S` (a failover): an answer that ended must not
        be taken over and generated a second time."""
        given_up_at = time.monotonic() + self.settings.worker.redis_outage_s
        while True:
            try:
                raise_refused(await self.worker.rounds.send(("XACK", stream, INFERENCE_GROUP, entry_id)))
                return
            except TRANSIENT:
                if time.monotonic() > given_up_at:
                    raise
                await asyncio.sleep(0.2)

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, self.stopping.set)
        await self._make_group()
        self.reader.start()
        tasks = [asyncio.create_task(job()) for job in (self._heartbeat, self._refresh_claims, self._listen_for_cancels)]
        if self.registry_file is not None:
            watcher = RegistryWatcher(self.registry_file, self._use_registry, self.settings.worker.registry_poll_s)
            watcher.listen_for_sighup()
            tasks.append(asyncio.create_task(watcher.run()))
        serve_metrics(self.worker.metrics.registry, self.settings.metrics.metrics_host, self.settings.worker.metrics_port)
        log.info(
            "worker.started",
            consumer=self.name,
            concurrency=self.settings.worker.worker_concurrency,
            metrics_port=self.settings.worker.metrics_port,
        )
        await self.stopping.wait()
        log.info("worker.stopping", running=len(self.worker.inflight), grace_s=self.settings.worker.shutdown_grace_s)
        await self.reader.stop(self.settings.worker.shutdown_grace_s)  # what still runs after the grace is cancelled
        for task in tasks:
            task.cancel()
        with contextlib.suppress(Exception):
            await self.redis.zrem(self.keys.workers, self.name)
        await self.http.close()
        await self.writer.aclose()
        await self.redis.aclose()
        log.info("worker.stopped")

    def _use_registry(self, registry: Registry) -> None:
        """A reloaded registry: generations that run keep their model; new ones use the new file."""
        self.worker.registry = registry

    async def _make_group(self) -> None:
        while True:
            try:
                await ensure_groups(self.redis, [(requests, INFERENCE_GROUP) for requests in self.keys.requests_partitions])
                return
            except (redis.exceptions.RedisError, OSError) as exc:
                log.warning("worker.waiting_for_redis", error=str(exc))
                await asyncio.sleep(1.0)

    async def _heartbeat(self) -> None:
        """Announce this worker in `chat.workers`, which the gateway's `/readyz` reads."""
        while True:
            with contextlib.suppress(redis.exceptions.RedisError, OSError):
                await self.redis.zadd(self.keys.workers, {self.name: time.time()})
            await asyncio.sleep(self.settings.worker.heartbeat_s)

    async def _refresh_claims(self) -> None:
        """Touch the entries of running generations so that no other worker takes them over."""
        every = self.settings.worker.claim_idle_s / 3
        while True:
            await asyncio.sleep(every)
            by_partition: dict[str, list[int | bytes | str | memoryview[int]]] = {}
            for request_id, entry_id in list(self.worker.entries.items()):
                by_partition.setdefault(self.keys.requests_for(request_id), []).append(entry_id)
            for requests, entries in by_partition.items():
                try:
                    await self.redis.xclaim(requests, INFERENCE_GROUP, self.name, 0, entries, justid=True)
                except (redis.exceptions.RedisError, OSError) as exc:
                    log.warning("claims.refresh_failed", error=str(exc))

    async def _listen_for_cancels(self) -> None:
        """Cancel signals on Pub/Sub; after a reconnect, the durable flags of running generations are checked too."""
        while True:
            pubsub = self.redis.pubsub()
            try:
                await pubsub.subscribe(self.keys.cancel_channel)
                for request_id in list(self.worker.inflight):
                    if await self.redis.exists(self.keys.cancel_flag(request_id)):
                        self.worker.cancel(request_id)
                async for message in pubsub.listen():
                    if message.get("type") == "message":
                        self.worker.cancel(message["data"].decode())
            except (redis.exceptions.RedisError, OSError) as exc:
                log.warning("cancels.disconnected", error=str(exc))
                await asyncio.sleep(0.5)
            finally:
                with contextlib.suppress(Exception):
                    await pubsub.aclose()  # type: ignore[no-untyped-call]
