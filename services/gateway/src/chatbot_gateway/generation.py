"""A stateless generation as the compatible APIs (OpenAI, Anthropic) start and follow it."""

from __future__ import annotations

import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import contextmanager
from typing import Any, Literal

import msgspec
import redis.exceptions
from litestar import Request
from litestar.datastructures import State

from chatbot_contracts import (
    DATA_FIELD,
    AnyStreamEvent,
    ChatMessage,
    ChatRequest,
    Completed,
    Delta,
    Done,
    Embedding,
    Error,
    GenerationParams,
    Started,
    Thinking,
    TokenUsage,
    ToolCallDelta,
    Usage,
    encode,
    new_request_id,
)
from chatbot_contracts.cache import CACHE_MODES, CachedAnswer, CacheMode, CachePolicy, cache_policy, cached_answer_decoder
from chatbot_contracts.capabilities import refusal
from chatbot_contracts.tracing import SpanKind, child_span, span_in, traceparent_of, traceparent_or_new, tracer, tracing_on

from .auth import Principal
from .errors import BadRequest, Forbidden, ModelNotFound, Unprocessable, UpstreamFailure
from .fairshare import budget_terms
from .follower import KEEPALIVE, Batch
from .ratelimit import reserve

TRACER = tracer("chatbot.gateway")


@contextmanager
def enqueue_span(request: Request[Any, Any, Any], model: str) -> Iterator[str]:
    """The gateway's hop of the trace, from the caller's `traceparent`: a span for the request's admission and
    one for publishing it; yields the `traceparent` the request carries to the worker."""
    incoming = request.headers.get("traceparent")
    if not tracing_on():
        yield traceparent_or_new(incoming)
        return
    route = next(iter(request.route_handler.paths), request.url.path)
    attributes = {"http.request.method": request.method, "http.route": route, "gen_ai.request.model": model}
    with span_in(incoming, TRACER, f"{request.method} {route}", SpanKind.SERVER, attributes):
        attributes = {"messaging.system": "redis", "messaging.operation.type": "send", "messaging.destination.name": "chat.requests"}
        with child_span(TRACER, "chat.requests send", SpanKind.PRODUCER, attributes) as publish:
            yield traceparent_of(publish, incoming)


class Generation:
    """A request enqueued, with the events that decide its HTTP status already read."""

    def __init__(
        self, chat: ChatRequest, prelude: list[Batch], rest: AsyncIterator[Batch], cancel: Callable[[], None], headers: dict[str, str]
    ) -> None:
        self.chat = chat
        self.headers = {"x-request-id": chat.request_id, **headers}
        """The response headers: the request id and the key's rate limits."""
        self.prelude = prelude
        self.rest = rest
        self.cancel = cancel
        """Stop the generation (for a client that left: these protocols have no resume)."""

    def batches(self) -> AsyncIterator[Batch]:
        """The prelude, then the rest."""
        return _Replayed(self.prelude, self.rest)

    async def events(self) -> AsyncIterator[Any]:
        async for batch in self.batches():
            for _, event in batch:
                yield event


class _Replayed:
    """Batches already read, then an iterator's own: no generator of its own between each batch and its reader
    (every layer costs a little on every token)."""

    __slots__ = ("_prelude", "_rest")

    def __init__(self, prelude: list[Batch], rest: AsyncIterator[Batch]) -> None:
        self._prelude = iter(prelude)
        self._rest = rest

    def __aiter__(self) -> _Replayed:
        return self

    def __anext__(self) -> Awaitable[Batch]:
        batch = next(self._prelude, None)
        return self._rest.__anext__() if batch is None else _ready(batch)


async def _ready(batch: Batch) -> Batch:
    return batch


def _decides(batch: Batch) -> bool:
    return any(isinstance(event, Delta | ToolCallDelta | Thinking | Embedding | Error | Done) for _, event in batch)


async def start(
    request: Request[Principal, Any, Any],
    state: State,
    alias: str,
    messages: list[ChatMessage],
    params: GenerationParams,
    purpose: Literal["chat", "embed"] = "chat",
) -> Generation:
    """Check, enqueue and wait for the first text (or vector), error or end.

    Holding the response until then lets a failure before any token have its own HTTP status
    (429, 502, …) instead of a 200 with an error inside the stream. `purpose: embed` asks for the vectors of the
    messages' contents (an `embedding` model's).
    """
    spec = state.registry.get(alias)
    if spec is None:
        raise ModelNotFound(f"the model `{alias}` does not exist; GET /v1/models lists the available ones", param="model")
    if spec.mode == "embedding" and purpose != "embed":
        raise BadRequest(
            f"the model `{alias}` is an embedding model; it serves POST /v1/embeddings", code="model_not_supported", param="model"
        )
    if spec.mode != "embedding" and purpose == "embed":
        raise BadRequest(f"the model `{alias}` is not an embedding model", code="model_not_supported", param="model")
    if len(messages) > state.settings.chat.max_messages:
        raise Unprocessable(
            f"the request has {len(messages)} messages; at most {state.settings.chat.max_messages} are allowed", param="messages"
        )
    if (images := sum(len(m.images or ()) for m in messages)) > state.settings.chat.max_images:
        raise Unprocessable(f"the request has {images} images; at most {state.settings.chat.max_images} are allowed", param="messages")
    if not request.user.may_use(alias):
        raise Forbidden(f"this key may not use the model `{alias}`", code="model_not_allowed")
    if problem := refusal(alias, spec, params, messages):
        raise BadRequest(problem[1], code="unsupported_parameter", param=problem[0])
    arrived = time.monotonic()
    principal = request.user
    cache = None
    if purpose == "chat" and params.thinking is None:  # reasoning is not kept with a cached answer
        mode = _cache_mode(request)
        cache = cache_policy(state.redis_keys, spec, alias, principal.owner, messages, params, mode, state.settings.chat.cache_ttl_s)
    max_tokens = 0 if purpose == "embed" else min(params.max_tokens or spec.max_output_tokens, spec.max_output_tokens)
    reserved = reserve(messages, max_tokens)
    rate_headers = await state.limits.take(principal, reserved)
    if cache is not None and cache.read and (answer := await _cached(state, cache)) is not None:
        with contextlib.suppress(redis.exceptions.RedisError, OSError):
            await state.limits.give_back(principal, reserved)  # the request counts; its tokens cost nothing
        return await _from_cache(state, principal, alias, messages, params, answer, rate_headers)
    now = time.time()
    with enqueue_span(request, alias) as traceparent:
        chat = ChatRequest(
            request_id=new_request_id(),
            model=alias,
            messages=messages,
            params=params,
            owner=principal.owner,
            key_id=principal.key_id,
            enqueued_at=now,
            deadline=now + state.settings.chat.request_timeout_s,
            traceparent=traceparent,
            reserved_tokens=reserved if (principal.tpm or principal.owner_tpm) else 0,
            key_tpm=principal.tpm,
            owner_tpm=principal.owner_tpm,
            **budget_terms(principal, spec, messages, max_tokens),
            cache_key=cache.key if cache else None,
            cache_index=cache.index if cache else None,
            cache_ttl_s=cache.ttl_s if cache else 0,
            purpose=purpose,
        )
        admission = await state.relay.submit(chat, principal)
    admitted_s = time.monotonic() - arrived
    rest = state.relay.batches(chat.request_id, chat.deadline, admission, keepalive_s=state.settings.chat.keepalive_s, enqueued_at=now)
    prelude: list[Batch] = []
    async for batch in rest:
        prelude.append(batch)
        if batch is KEEPALIVE or _decides(batch):
            break
    answered = any(isinstance(e, Delta | ToolCallDelta | Thinking | Embedding) for batch in prelude for _, e in batch)
    for batch in prelude:
        for _, event in batch:
            if isinstance(event, Error) and not answered:
                await rest.aclose()
                raise UpstreamFailure(event.code, event.message, event.retry_after)
    # What the platform added before the provider was called: the gateway's own work, then queue and worker.
    waited = next((e.waited_s for batch in prelude for _, e in batch if isinstance(e, Started)), 0.0)
    headers = {**rate_headers, "x-chatbot-overhead-ms": f"{(admitted_s + waited) * 1000:.1f}"}
    if cache is not None:
        headers["x-chatbot-cache"] = "miss"
    # The deployment that answers: the last one started before the answer began (retries start others first).
    if deployment := next((e.deployment for batch in reversed(prelude) for _, e in reversed(batch) if isinstance(e, Started)), None):
        headers["x-chatbot-deployment"] = deployment
    state.metrics.overhead.observe(admitted_s + waited)
    return Generation(chat, prelude, rest, cancel=lambda: state.relay.cancel_soon(chat.request_id), headers=headers)


def _cache_mode(request: Request[Any, Any, Any]) -> CacheMode | None:
    """The request's `x-chatbot-cache` header (`use`, `refresh` or `skip`), or None."""
    value = request.headers.get("x-chatbot-cache")
    if value is None:
        return None
    mode = value.strip().lower()
    if mode not in CACHE_MODES:
        raise BadRequest(f"the header x-chatbot-cache is {value!r}; it may be use, refresh or skip", param="x-chatbot-cache")
    return mode


async def _cached(state: State, cache: CachePolicy) -> CachedAnswer | None:
    """The answer cached under `cache.key`; None when there is none, it cannot be read, or Redis is away (then the
    request is generated as if there were no cache)."""
    try:
        raw = await state.redis.get(cache.key)
        return cached_answer_decoder.decode(raw) if raw else None
    except (redis.exceptions.RedisError, OSError, msgspec.MsgspecError):
        return None


async def _from_cache(
    state: State,
    principal: Principal,
    alias: str,
    messages: list[ChatMessage],
    params: GenerationParams,
    answer: CachedAnswer,
    rate_headers: dict[str, str],
) -> Generation:
    """A cached answer as a finished generation: the same events a worker writes, replayed at once, at no cost.

    The hit goes into the inference events (and so into the usage and the request log) as a completed request
    marked `cache: hit`."""
    now = time.time()
    chat = ChatRequest(
        request_id=new_request_id(), model=alias, messages=messages, params=params, owner=principal.owner,
        key_id=principal.key_id, enqueued_at=now, deadline=now,
    )  # fmt: skip
    usage = TokenUsage(input_tokens=answer.usage.input_tokens, output_tokens=answer.usage.output_tokens, cost_usd=0.0)
    events: list[AnyStreamEvent] = [
        Started(model=answer.model, provider=answer.provider, upstream_model=answer.upstream_model, deployment=answer.deployment)
    ]
    if answer.text:
        events.append(Delta(text=answer.text))
    for index, call in enumerate(answer.tool_calls or []):
        events.append(ToolCallDelta(index=index, id=call.id, name=call.function.name, arguments=call.function.arguments))
    events += [Usage(usage=usage), Done(reason=answer.finish_reason)]
    completed = Completed(
        request_id=chat.request_id, model=alias, provider=answer.provider, upstream_model=answer.upstream_model,
        owner=principal.owner, key_id=principal.key_id, at=now, text=answer.text, finish_reason=answer.finish_reason,
        tool_calls=answer.tool_calls, usage=usage, deployment=answer.deployment, cache="hit",
    )  # fmt: skip
    with contextlib.suppress(redis.exceptions.RedisError, OSError):
        await state.redis.xadd(
            state.redis_keys.events_for(chat.request_id),
            {DATA_FIELD: encode(completed)},
            maxlen=state.settings.chat.events_maxlen,
            approximate=True,
        )
    headers = {**rate_headers, "x-chatbot-cache": "hit", "x-chatbot-overhead-ms": "0.0"}
    if answer.deployment:
        headers["x-chatbot-deployment"] = answer.deployment
    return Generation(chat, [[(f"0-{i + 1}".encode(), event) for i, event in enumerate(events)]], _nothing(), lambda: None, headers)


async def _nothing() -> AsyncIterator[Batch]:
    return
    yield
