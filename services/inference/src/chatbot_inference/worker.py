"""Runs one chat request to its end: provider calls with retries and fallbacks, events to Redis."""

from __future__ import annotations

import asyncio
import math
import random
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import msgspec
import redis.asyncio as aioredis
import redis.exceptions
import structlog

from chatbot_contracts import (
    DATA_FIELD,
    INFERENCE_GROUP,
    Cancelled,
    ChatMessage,
    ChatRequest,
    Completed,
    Delta,
    Done,
    Embedding,
    Error,
    Failed,
    FinishReason,
    FirstToken,
    GenerationStarted,
    Keys,
    ModelSpec,
    Queued,
    Registry,
    Restart,
    Route,
    Started,
    Thinking,
    TokenUsage,
    ToolCallDelta,
    ToolCalls,
    Usage,
    encode,
)
from chatbot_contracts.buckets import MinuteBuckets
from chatbot_contracts.cache import MAX_ENTRY_BYTES, CachedAnswer
from chatbot_contracts.capabilities import refusal
from chatbot_contracts.keys import SPEND_TTL_S
from chatbot_contracts.redis import SharedRounds, raise_refused
from chatbot_contracts.tracing import SpanKind, child_span, span_in, traceparent_of, tracer

from .limits import ModelLimits, estimate_request_tokens
from .metrics import WorkerMetrics
from .providers import Provider, ProviderError
from .providers.tools import estimated_tokens
from .redaction import mask_secrets, public_message
from .routing import Router
from .settings import ProviderSettings, WorkerSettings
from .sink import SharedPipeline, StreamSink, TakenOver

log = structlog.get_logger()
TRACER = tracer("chatbot.inference")

MAX_RETRY_AFTER_S = 60.0
STARTED_WAIT_S = 0.05
"""How long `started` may wait for the first token to share its write (a client shows it as "thinking", if at all)."""


class _RequestId(msgspec.Struct):
    request_id: str


_request_id_decoder = msgspec.json.Decoder(_RequestId)


def _being_cancelled() -> bool:
    """Whether the current task itself is being cancelled (shutdown), not just something it awaited."""
    task = asyncio.current_task()
    return task is not None and task.cancelling() > 0


def backoff_s(retry: int, settings: ProviderSettings, retry_after: float | None) -> float:
    """Exponential backoff with full jitter; a provider's Retry-After is honoured when it asks for longer."""
    delay = random.uniform(0, min(settings.retry_max_s, settings.retry_base_s * 2**retry))
    if retry_after is not None:
        delay = max(delay, min(retry_after, MAX_RETRY_AFTER_S))
    return delay


@contextmanager
def _provider_span(spec: ModelSpec, outcome: _Outcome) -> Iterator[None]:
    """One provider call as a GenAI client span, with the usage it reported."""
    attributes = {"gen_ai.operation.name": "chat", "gen_ai.system": spec.provider, "gen_ai.request.model": spec.upstream_model}
    with child_span(TRACER, f"chat {spec.upstream_model}", SpanKind.CLIENT, attributes) as span:
        yield
        if outcome.usage is not None and span.is_recording():
            span.set_attribute("gen_ai.usage.input_tokens", outcome.usage.input_tokens)
            span.set_attribute("gen_ai.usage.output_tokens", outcome.usage.output_tokens)
            span.set_attribute("gen_ai.response.finish_reasons", [outcome.finish_reason])


class _Text:
    """An answer's text as it arrives, a token's piece at a time.

    A string a piece, kept until the answer ends, cost more than the text in it (`bench/README.md`, Round 29), so
    every `JOIN_EVERY` pieces are joined into one: linear in the answer's length.
    """

    JOIN_EVERY = 256

    def __init__(self) -> None:
        self.pieces = 0
        self._joined: list[str] = []
        self._recent: list[str] = []

    def add(self, piece: str) -> None:
        self.pieces += 1
        self._recent.append(piece)
        if len(self._recent) == self.JOIN_EVERY:
            self._joined.append("".join(self._recent))
            self._recent.clear()

    def __str__(self) -> str:
        return "".join(self._joined) + "".join(self._recent)


class _Outcome:
    """What a generation produced, whichever way it ended."""

    def __init__(self, traceparent: str | None = None) -> None:
        self.traceparent = traceparent
        """The worker's span, parent of what the events' consumers do with them."""
        self.text = _Text()
        self.tool_calls = ToolCalls()
        self.other_output = 0
        """Output events that are neither text nor tool calls: embeddings, reasoning."""
        self.alias = ""
        self.spec: ModelSpec | None = None
        self.deployment: str | None = None
        self.route: str | None = None
        self.first_token_at: float | None = None
        self.usage: TokenUsage | None = None
        self.finish_reason: FinishReason = "stop"
        self.retries = 0
        self.fallbacks = 0

    @property
    def delivered(self) -> bool:
        """Whether anything of the answer has been written for the client (then nothing may be retried)."""
        return bool(self.text.pieces or self.tool_calls or self.other_output)


class Worker:
    """Handles chat requests; one instance per process, shared by its concurrent generations."""

    def __init__(
        self,
        redis: aioredis.Redis,
        keys: Keys,
        registry: Registry,
        providers: dict[str, Provider],
        settings: WorkerSettings,
        provider_settings: ProviderSettings,
        metrics: WorkerMetrics | None = None,
        writer: aioredis.Redis | None = None,
        write_within_s: float | None = None,
    ) -> None:
        """`writer`: the client for the request streams' writes (`redis` without), whose rounds take `write_within_s` at most."""
        self.metrics = metrics or WorkerMetrics()
        self.limits = ModelLimits(redis, keys, max_wait_s=provider_settings.limit_wait_s)
        self.router = Router(redis, keys)
        self.key_buckets = MinuteBuckets(redis)
        self.redis = redis
        self.rounds = SharedRounds(redis)
        """Small commands of concurrent generations (their starts, their acknowledgements), one round trip for those of a
        loop's turn."""
        self.writes = SharedPipeline(
            writer or redis,
            write_within_s,
            settings.write_window_ms / 1000,
            outage_s=settings.redis_outage_s,
            on_rewrite=self.metrics.rewritten.inc,
        )
        """Every request stream's writes, batched across requests."""
        self.keys = keys
        self.registry = registry
        self.providers = providers
        self.settings = settings
        self.provider_settings = provider_settings
        self.inflight: dict[str, asyncio.Task[None]] = {}
        """Running generations by request id."""
        self.entries: dict[str, str] = {}
        """The `chat.requests` entry id of each running generation (their claims are kept fresh)."""
        self.cancelled: set[str] = set()
        self.starting: set[str] = set()
        """Requests between their entry's delivery and their registration in `inflight`."""

    async def handle(self, request: ChatRequest, entry_id: str = "") -> None:
        """Generate the answer to `request` and write its stream through the terminal events.

        Returns once the request is finished for good (the caller acknowledges it). Raises when
        it must stay pending for another worker: this worker is shutting down mid-generation.
        """
        attributes = {"gen_ai.operation.name": "chat", "gen_ai.request.model": request.model, "messaging.system": "redis"}
        with span_in(request.traceparent, TRACER, f"generate {request.model}", SpanKind.CONSUMER, attributes) as span:
            await self._handle(request, entry_id, traceparent_of(span, request.traceparent))

    async def _handle(self, request: ChatRequest, entry_id: str, traceparent: str) -> None:
        request_id = request.request_id
        started_at = time.time()
        if request_id in self.inflight or request_id in self.starting:
            raise TakenOver(f"request {request_id} already runs in this worker")
        self.starting.add(request_id)
        try:
            attempt, spared, cancelled, owner = await self._start_attempt(request_id, entry_id)
        finally:
            self.starting.discard(request_id)
        if entry_id and owner != self.settings.consumer_name:
            # It waited here past the claim time and another worker took it (or finished it): it is theirs.
            await self.redis.decr(self.keys.attempts(request_id))
            raise TakenOver(f"request {request_id} is now {owner or 'finished'}'s")
        sink = self._sink(request, started_at, attempt)
        outcome = _Outcome(traceparent)
        if attempt == 1:
            # Not a write of its own: it goes with `started`.
            sink.push(Queued(**self._event_fields(request, outcome, attempt) | {"at": request.enqueued_at}), within_s=math.inf)
            self.metrics.queue_wait.observe(max(0.0, started_at - request.enqueued_at))
        else:
            self.metrics.claims.inc()
            # Claimed after its worker died: the client drops the text of the dead attempt.
            log.warning("generation.reclaimed", request_id=request_id, attempt=attempt)
            sink.push(Restart(attempt=attempt))
        if attempt - spared > self.settings.max_attempts:
            await self.redis.xadd(self.keys.dead_letters, {DATA_FIELD: encode(request), "error": f"{attempt - 1} attempts failed"})
            await self._fail(
                sink,
                request,
                outcome,
                attempt,
                started_at,
                ProviderError("internal", f"the request failed on {attempt - 1} attempts; it was set aside"),
            )
            return
        if cancelled:
            await self._end_cancelled(sink, request, outcome, attempt, started_at)
            return
        remaining = request.deadline - started_at
        if remaining <= 0:
            await self._fail(
                sink,
                request,
                outcome,
                attempt,
                started_at,
                ProviderError("deadline_exceeded", "the request waited in the queue past its deadline"),
            )
            return
        generation = asyncio.create_task(self._generate(request, sink, outcome, started_at, attempt))
        self.inflight[request_id] = generation
        self.metrics.in_flight.inc()
        if entry_id:
            self.entries[request_id] = entry_id
        try:
            async with asyncio.timeout(remaining):
                await generation
        except asyncio.CancelledError:
            if request_id in self.cancelled and not _being_cancelled():
                await self._end_cancelled(sink, request, outcome, attempt, started_at)
                return
            await sink.abort()
            raise
        except (ProviderError, TimeoutError) as exc:
            error = (
                exc
                if isinstance(exc, ProviderError)
                else ProviderError("deadline_exceeded", "the answer was not complete before the request's deadline")
            )
            await self._fail(sink, request, outcome, attempt, started_at, error)
            return
        except Exception as exc:
            if isinstance(exc, TakenOver | redis.exceptions.RedisError | OSError):
                await sink.abort()
                raise  # another worker's now, or Redis is away: the request stays pending for a takeover
            await self._fail_inside(sink, request, outcome, attempt, started_at, exc)
            return
        except BaseException:
            await sink.abort()
            raise
        finally:
            self.metrics.in_flight.dec()
            self.inflight.pop(request_id, None)
            self.entries.pop(request_id, None)
            self.cancelled.discard(request_id)
        usage = self._usage(request, outcome)
        if request.cache_key and request.cache_index and outcome.finish_reason != "error":
            # Before `done`: a client that asks again once its answer ended finds it cached.
            await self._store_answer(request, request.cache_key, request.cache_index, outcome, usage)
        await sink.close(
            Usage(usage=usage),
            Done(reason=outcome.finish_reason),
            Completed(
                **self._ended_fields(request, outcome, attempt, started_at),
                text=str(outcome.text),
                finish_reason=outcome.finish_reason,
                tool_calls=outcome.tool_calls.calls() or None,
                usage=usage,
                ttft_s=(outcome.first_token_at - started_at) if outcome.first_token_at else None,
                budget_period=request.budget_period,
                cache="miss" if request.cache_key else None,
            ),
        )
        await self._settle_key(request, usage)
        self._observe(outcome, "completed", started_at, usage)
        log.debug("generation.completed", request_id=request_id, model=outcome.alias, output_tokens=usage.output_tokens)
        if self.settings.log_content:
            log.info("generation.content", request_id=request_id, prompt=[m.content for m in request.messages], answer=str(outcome.text))

    async def _store_answer(self, request: ChatRequest, key: str, index: str, outcome: _Outcome, usage: TokenUsage) -> None:
        """Keep a completed answer in the response cache (an answer past `MAX_ENTRY_BYTES` is not kept)."""
        answer = encode(
            CachedAnswer(
                model=outcome.alias,
                provider=outcome.spec.provider if outcome.spec else "",
                upstream_model=outcome.spec.upstream_model if outcome.spec else "",
                deployment=outcome.deployment,
                text=str(outcome.text),
                tool_calls=outcome.tool_calls.calls() or None,
                finish_reason=outcome.finish_reason,
                usage=usage,
                stored_at=time.time(),
            )
        )
        if len(answer) > MAX_ENTRY_BYTES:
            log.info("cache.too_large", request_id=request.request_id, bytes=len(answer))
            return
        try:
            pipeline = self.redis.pipeline(transaction=False)
            pipeline.set(key, answer, ex=request.cache_ttl_s)
            pipeline.sadd(index, key)
            pipeline.expire(index, request.cache_ttl_s, gt=True)
            pipeline.expire(index, request.cache_ttl_s, nx=True)
            await pipeline.execute()
        except (redis.exceptions.RedisError, OSError) as exc:
            log.warning("cache.store_failed", request_id=request.request_id, error=str(exc))

    async def _settle_key(self, request: ChatRequest, usage: TokenUsage | None) -> None:
        """Settle with the key: give back tokens reserved but not used, and settle the spend reserved with the real cost."""
        try:
            unused = request.reserved_tokens - (usage.input_tokens + usage.output_tokens if usage else 0)
            if request.key_tpm and request.reserved_tokens:
                await self.key_buckets.give_back(self.keys.rate(request.owner, request.key_id, "tpm"), unused, request.key_tpm)
            if request.owner_tpm and request.reserved_tokens:
                await self.key_buckets.give_back(self.keys.rate(request.owner, None, "tpm"), unused, request.owner_tpm)
            # The gateway reserved the worst case at admission: the spend moves by the real cost less that.
            change = (usage.cost_usd if usage is not None else 0.0) - request.budget_reserved_usd
            if request.budget_period and change:
                spend = self.keys.spend(request.key_id, request.budget_period, request.budget_label)
                pipe = self.redis.pipeline(transaction=False)
                pipe.incrbyfloat(spend, change)
                pipe.expire(spend, SPEND_TTL_S[request.budget_period])
                await pipe.execute()
        except redis.exceptions.RedisError as exc:
            log.warning("key.settle_failed", request_id=request.request_id, error=str(exc))

    def cancel(self, request_id: str) -> bool:
        """Stop the generation of `request_id` if it runs here (its provider call is closed at once)."""
        generation = self.inflight.get(request_id)
        if generation is None or generation.done():
            return False
        self.cancelled.add(request_id)
        generation.cancel()
        return True

    async def _start_attempt(self, request_id: str, entry_id: str) -> tuple[int, int, bool, str | None]:
        """Count this start of the request, learn how many of its attempts were spared (`spare_attempt`), whether its
        client already cancelled it, and who holds its entry (one round trip)."""
        attempts = self.keys.attempts(request_id)
        commands: list[tuple[Any, ...]] = [
            ("INCR", attempts),
            ("EXPIRE", attempts, self.settings.stream_ttl_s * 2),
            ("GET", self.keys.spared_attempts(request_id)),
            ("EXISTS", self.keys.cancel_flag(request_id)),
        ]
        if entry_id:
            commands.append(
                ("XPENDING", self.keys.requests_for(request_id), INFERENCE_GROUP, entry_id, entry_id, 1, {"parse_detail": True})
            )
        attempt, _, spared, cancelled, *pending = raise_refused(await self.rounds.send(*commands))
        owner = None
        if pending and pending[0]:
            consumer = pending[0][0]["consumer"]
            owner = consumer.decode() if isinstance(consumer, bytes) else str(consumer)
        return int(attempt), int(spared or 0), bool(cancelled), owner

    async def spare_attempt(self, request_id: str) -> None:
        """The request's current attempt ended because Redis could not be written: it does not count against
        `CHATBOT_MAX_ATTEMPTS` (its number still rises, so the next attempt still starts with `restart`)."""
        pipe = self.redis.pipeline(transaction=False)
        pipe.incr(self.keys.spared_attempts(request_id))
        pipe.expire(self.keys.spared_attempts(request_id), self.settings.stream_ttl_s * 2)
        await pipe.execute()

    def _sink(self, request: ChatRequest, started_at: float, attempt: int) -> StreamSink:
        return StreamSink(
            self.writes,
            self.keys.request_stream(request.request_id),
            self.keys.events_for(request.request_id),
            open_ttl_s=int(max(0.0, request.deadline - started_at)) + self.settings.stream_ttl_s,
            closed_ttl_s=self.settings.stream_ttl_s,
            events_maxlen=self.settings.events_maxlen,
            release=(self.keys.inflight(request.key_id), request.request_id),
            fence=(self.keys.attempts(request.request_id), attempt),
        )

    def _observe(self, outcome: _Outcome, how: str, started_at: float, usage: TokenUsage | None) -> None:
        model, provider = outcome.alias or "none", outcome.spec.provider if outcome.spec else "none"
        ended_at = time.time()
        self.metrics.duration.labels(model, provider, how).observe(ended_at - started_at)
        if usage is not None and usage.output_tokens > 1 and outcome.first_token_at is not None:
            per_token = (ended_at - outcome.first_token_at) / (usage.output_tokens - 1)
            self.metrics.time_per_output_token.labels(model, provider).observe(per_token)
        if usage is not None:
            self.metrics.tokens.labels(model, provider, "input").observe(usage.input_tokens)
            self.metrics.tokens.labels(model, provider, "output").observe(usage.output_tokens)

    async def _fail(
        self, sink: StreamSink, request: ChatRequest, outcome: _Outcome, attempt: int, started_at: float, error: ProviderError
    ) -> None:
        log.warning(
            "generation.failed", request_id=request.request_id, model=request.model, code=error.code, error=mask_secrets(error.message)
        )
        usage = self._usage(request, outcome) if outcome.delivered else None
        message = public_message(error)
        await sink.close(
            Error(code=error.code, message=message, retry_after=error.retry_after),
            Done(reason="error"),
            Failed(
                **self._ended_fields(request, outcome, attempt, started_at),
                code=error.code,
                message=message,
                text=str(outcome.text),
                usage=usage,
            ),
        )
        await self._settle_key(request, usage)
        self.metrics.errors.labels(error.code).inc()
        self._observe(outcome, "failed", started_at, usage)

    async def _fail_inside(
        self, sink: StreamSink, request: ChatRequest, outcome: _Outcome, attempt: int, started_at: float, exc: Exception
    ) -> None:
        """End a request whose generation failed in this worker's own code (a defect, not a provider's answer): at once,
        dead-lettered for an operator, and not retried, since every worker would fail it the same way and call its
        provider again each time."""
        log.error("generation.defect", request_id=request.request_id, model=request.model, exc_info=exc)
        await self.redis.xadd(self.keys.dead_letters, {DATA_FIELD: encode(request), "error": mask_secrets(repr(exc))[:2000]})
        message = f"the worker failed while generating this answer ({type(exc).__name__}); it is logged, and the request was not retried"
        await self._fail(sink, request, outcome, attempt, started_at, ProviderError("internal", message))

    async def _end_cancelled(self, sink: StreamSink, request: ChatRequest, outcome: _Outcome, attempt: int, started_at: float) -> None:
        log.info("generation.cancelled", request_id=request.request_id, model=request.model, chars=len(str(outcome.text)))
        usage = self._usage(request, outcome) if outcome.delivered else None
        await sink.close(
            Done(reason="cancelled"),
            Cancelled(**self._ended_fields(request, outcome, attempt, started_at), text=str(outcome.text), usage=usage),
        )
        await self._settle_key(request, usage)
        self.metrics.cancellations.inc()
        self._observe(outcome, "cancelled", started_at, usage)

    async def refuse(self, payload: bytes, reason: str) -> None:
        """Dead-letter an entry that cannot be handled, and end its client's stream when its id can be read."""
        log.error("request.undecodable", error=reason)
        await self.redis.xadd(self.keys.dead_letters, {DATA_FIELD: payload, "error": reason})
        try:
            request_id = _request_id_decoder.decode(payload).request_id
        except msgspec.MsgspecError:
            return
        sink = StreamSink(
            self.writes,
            self.keys.request_stream(request_id),
            self.keys.events_for(request_id),
            open_ttl_s=self.settings.stream_ttl_s,
            closed_ttl_s=self.settings.stream_ttl_s,
            events_maxlen=self.settings.events_maxlen,
        )
        await sink.close(Error(code="internal", message=reason), Done(reason="error"))

    async def _generate(self, request: ChatRequest, sink: StreamSink, outcome: _Outcome, started_at: float, attempt: int = 1) -> None:
        if request.model not in self.registry:
            raise ProviderError("bad_request", f"the model `{request.model}` is not in this worker's registry")
        retries = self.provider_settings.provider_retries
        last_error: ProviderError | None = None
        for alias, spec in self.registry.chain(request.model):
            too_small = outcome.spec is not None and spec.context_window <= outcome.spec.context_window
            if last_error is not None and last_error.code == "context_length_exceeded" and too_small:
                continue  # only a larger context window can help
            if problem := refusal(alias, spec, request.params, request.messages):
                last_error = ProviderError("bad_request", problem[1])
                continue
            if (spec.mode == "embedding") != (request.purpose == "embed"):
                kind = "an embedding model" if spec.mode == "embedding" else "a chat model"
                last_error = ProviderError("bad_request", f"model `{alias}` is {kind}; it cannot serve this request")
                continue
            plan = await self.router.plan(spec, self.registry.routes(alias), request.request_id)
            if not plan.routes:
                log.warning("generation.no_deployment", request_id=request.request_id, model=alias, skipped=plan.skipped)
                last_error = ProviderError(
                    "overloaded", f"every deployment of model `{alias}` is cooling down after failures", retry_after=plan.retry_after_s
                )
                continue
            if last_error is not None:
                log.info("generation.fallback", request_id=request.request_id, model=alias, after=last_error.code)
                self.metrics.fallbacks.inc()
                outcome.fallbacks += 1
            outcome.alias = alias
            tries, turn = 0, 0
            while tries <= retries:
                route = plan.routes[turn % len(plan.routes)]
                others = len(plan.routes) - 1 - turn % len(plan.routes) > 0
                turn += 1
                provider = self.providers.get(route.spec.provider)
                if provider is None:
                    last_error = ProviderError(
                        "bad_request", f"no adapter for provider `{route.spec.provider}` (model `{alias}`) in this worker"
                    )
                    break
                if route.deployment and (problem := refusal(alias, route.spec, request.params, request.messages)):
                    last_error = ProviderError("bad_request", problem[1])
                    if others:
                        continue
                    break
                outcome.spec, outcome.deployment = route.spec, (route.name if route.deployment else None)
                outcome.route = plan.reason(spec.routing) if route.deployment else None
                waited = max(0.0, time.time() - request.enqueued_at)
                # Written with the first token, or once the provider has kept it waiting for STARTED_WAIT_S.
                sink.push(
                    Started(
                        model=alias,
                        provider=route.spec.provider,
                        upstream_model=route.spec.upstream_model,
                        attempt=attempt,
                        waited_s=waited,
                        deployment=outcome.deployment,
                    ),
                    within_s=STARTED_WAIT_S,
                )
                sink.push(
                    GenerationStarted(
                        **self._event_fields(request, outcome, attempt), queue_wait_s=max(0.0, started_at - request.enqueued_at)
                    ),
                    within_s=STARTED_WAIT_S,
                )
                probe = route.name in plan.probes
                try:
                    with _provider_span(route.spec, outcome):
                        async with self.router.running(spec, route, request.request_id):
                            await self._call(provider, alias, route, request, sink, outcome, started_at, attempt, wait=not others)
                    self.metrics.deployment_calls.labels(alias, route.name, "ok").inc()
                    await self.router.succeeded(route, probe)
                    return
                except ProviderError as error:
                    last_error = error
                    self.metrics.deployment_calls.labels(alias, route.name, error.code).inc()
                    if error.at_limit and others and not outcome.delivered:
                        continue  # at its own limit: another deployment has room, and this was no try
                    if error.retryable and not error.at_limit and route.deployment:
                        if await self.router.failed(spec, route, error.retry_after if error.code == "rate_limited" else None):
                            self.metrics.cooldowns.labels(alias, route.name).inc()
                    elif probe:
                        await self.router.succeeded(route, probe)  # it answered, if with a refusal: healthy
                    if outcome.delivered or error.code == "bad_request":
                        raise  # text has reached the client, or no other try can succeed
                    if not error.retryable or tries == retries:
                        break  # on to the next fallback
                    tries += 1
                    outcome.retries += 1
                    self.metrics.retries.labels(error.code).inc()
                    if others:
                        log.info("generation.next_deployment", request_id=request.request_id, model=alias, after=error.code)
                        continue  # another deployment first, at once
                    delay = backoff_s(tries - 1, self.provider_settings, error.retry_after)
                    log.info("generation.retry", request_id=request.request_id, model=alias, code=error.code, delay_s=round(delay, 3))
                    await asyncio.sleep(delay)
        assert last_error is not None
        raise last_error

    async def _call(
        self,
        provider: Provider,
        alias: str,
        route: Route,
        request: ChatRequest,
        sink: StreamSink,
        outcome: _Outcome,
        started_at: float,
        attempt: int,
        wait: bool = True,
    ) -> None:
        """One provider call under the deployment's limits (waited for only when `wait`), its first token and every later
        one on a timer."""
        spec = route.spec
        if spec.system_prompt and not any(m.role == "system" for m in request.messages):
            request = msgspec.structs.replace(request, messages=[ChatMessage(role="system", content=spec.system_prompt), *request.messages])
        budget = min(request.params.max_tokens or spec.max_output_tokens, spec.max_output_tokens)
        reserved = estimate_request_tokens(sum(len(m.content) for m in request.messages), budget)
        await self.limits.take(route.name, spec, reserved, request.deadline if wait else time.time())
        first_token_s = spec.first_token_timeout_s or self.provider_settings.first_token_timeout_s
        idle_s = spec.idle_timeout_s or self.provider_settings.idle_timeout_s
        # The idle timer moves at most every `slack` seconds (moving it costs a timer-heap operation
        # per token): a silent stream fails between `idle_s` and `idle_s + slack` after its last token.
        slack = min(1.0, idle_s / 4)
        loop = asyncio.get_running_loop()
        call_started = time.monotonic()
        slot_deadline = request.deadline if wait else time.time()
        if request.purpose == "embed":
            embed = getattr(provider, "embed", None)
            if embed is None:
                raise ProviderError("bad_request", f"provider {spec.provider} (model `{alias}`) has no embeddings")
            events = embed(request, spec)
        else:
            events = provider.stream(request, spec)
        async with self.limits.slot(route.name, spec, request.request_id, slot_deadline):
            try:
                async with asyncio.timeout(first_token_s) as timer:
                    async for event in events:
                        match event:
                            case Delta() | ToolCallDelta() | Thinking() | Embedding():
                                if outcome.first_token_at is None:
                                    timer.reschedule(loop.time() + idle_s + slack)
                                    outcome.first_token_at = time.time()
                                    ttft_s = time.monotonic() - call_started
                                    self.metrics.time_to_first_token.labels(alias, spec.provider).observe(ttft_s)
                                    if route.deployment:
                                        self.metrics.deployment_ttft.labels(alias, route.name).observe(ttft_s)
                                        await self.router.observe(spec, route, "ttft_s", ttft_s)
                                    sink.push(
                                        FirstToken(
                                            **self._event_fields(request, outcome, attempt), ttft_s=outcome.first_token_at - started_at
                                        )
                                    )
                                if isinstance(event, Delta):
                                    outcome.text.add(event.text)
                                elif isinstance(event, ToolCallDelta):
                                    outcome.tool_calls.add(event)
                                else:
                                    outcome.other_output += 1
                                sink.push(event)
                                if outcome.text.pieces + outcome.tool_calls.pieces + outcome.other_output == 1:
                                    await sink.let_write_start()
                                if (when := timer.when()) is not None and when < loop.time() + idle_s:
                                    timer.reschedule(loop.time() + idle_s + slack)
                            case TokenUsage():
                                outcome.usage = event
                            case Done(reason=reason):
                                outcome.finish_reason = reason
            except TimeoutError as exc:
                waited = f"no token for {idle_s:g}s" if outcome.delivered else f"no first token within {first_token_s:g}s"
                raise ProviderError("timeout", f"{spec.provider}: {waited}") from exc
        if outcome.usage is not None:
            await self.limits.give_back(route.name, spec, reserved - outcome.usage.input_tokens - outcome.usage.output_tokens)
        if outcome.first_token_at is not None and (tokens := outcome.usage.output_tokens if outcome.usage else outcome.text.pieces) > 1:
            streamed_s = time.time() - outcome.first_token_at
            if streamed_s > 0:
                await self.router.observe(spec, route, "tokens_per_s", tokens / streamed_s)

    def _usage(self, request: ChatRequest, outcome: _Outcome) -> TokenUsage:
        usage = outcome.usage or TokenUsage(
            input_tokens=sum(estimated_tokens(m.content) for m in request.messages),
            output_tokens=estimated_tokens(str(outcome.text)),
            estimated=True,
        )
        cost = outcome.spec.cost_usd(usage.input_tokens, usage.output_tokens) if outcome.spec else 0.0
        return TokenUsage(
            input_tokens=usage.input_tokens,
            output_tokens=usage.output_tokens,
            cached_tokens=usage.cached_tokens,
            cost_usd=cost,
            estimated=usage.estimated,
        )

    @classmethod
    def _ended_fields(cls, request: ChatRequest, outcome: _Outcome, attempt: int, started_at: float) -> dict[str, Any]:
        """The fields of a terminal event: the shared ones, what the end took, and how long the whole generation did."""
        fields = cls._event_fields(request, outcome, attempt)
        return fields | {"retries": outcome.retries, "fallbacks": outcome.fallbacks, "duration_s": fields["at"] - started_at}

    @staticmethod
    def _event_fields(request: ChatRequest, outcome: _Outcome, attempt: int) -> dict[str, Any]:
        """The fields every `InferenceEvent` of this generation shares, as of now."""
        return {
            "request_id": request.request_id,
            "model": request.model,
            "provider": outcome.spec.provider if outcome.spec else "",
            "upstream_model": outcome.spec.upstream_model if outcome.spec else "",
            "owner": request.owner,
            "key_id": request.key_id,
            "attempt": attempt,
            "traceparent": outcome.traceparent or request.traceparent,
            "conversation_id": request.conversation_id,
            "message_id": request.message_id,
            "purpose": request.purpose,
            "deployment": outcome.deployment,
            "route": outcome.route,
            "at": time.time(),
        }
