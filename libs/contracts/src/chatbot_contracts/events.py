"""Events: what a worker writes to a request's stream, and what it reports on `inference.events`."""

from __future__ import annotations

from typing import Literal

import msgspec

from .chat import FunctionCall, ToolCall
from .knowledge import Source

ErrorCode = Literal[
    "authentication",
    "permission",
    "bad_request",
    "context_length_exceeded",
    "rate_limited",
    "overloaded",
    "upstream_error",
    "timeout",
    "network",
    "cancelled",
    "deadline_exceeded",
    "internal",
]
"""The classes of failure; each maps to one HTTP status and one metrics label."""

FinishReason = Literal["stop", "length", "tool_calls", "content_filter", "cancelled", "error"]


class TokenUsage(msgspec.Struct, frozen=True, kw_only=True):
    """Token counts of one generation and what they cost."""

    input_tokens: int = 0
    output_tokens: int = 0
    cached_tokens: int = 0
    cost_usd: float = 0.0
    estimated: bool = False
    """True when counted locally because the provider did not report usage."""


# --- The per-request stream: chat.stream.{request_id} -------------------------------------------


class StreamEvent(msgspec.Struct, frozen=True, kw_only=True, tag_field="type"):
    """Base of the events of one request's stream, in the order the client sees them."""


class Start(StreamEvent, tag="start", frozen=True):
    """The first event of a native turn: which request and messages it is about."""

    request_id: str
    conversation_id: str | None = None
    user_message_id: str | None = None
    assistant_message_id: str | None = None


class InQueue(StreamEvent, tag="queued", frozen=True):
    """The request waits for a worker; `position` requests were ahead of it when it was enqueued."""

    position: int


class Sources(StreamEvent, tag="sources", frozen=True):
    """The passages a grounded answer was given, numbered as the model cites them; before its first token."""

    sources: list[Source]


class Started(StreamEvent, tag="started", frozen=True):
    """A worker began a generation; `model` is the alias that answers (a fallback's, after a failure)."""

    model: str
    provider: str
    upstream_model: str = ""
    attempt: int = 1
    waited_s: float = 0.0
    """Time from the gateway enqueueing the request to this call to the provider (queue and worker)."""
    deployment: str | None = None
    """The alias's deployment that was called, when it has several."""


class Delta(StreamEvent, tag="delta", frozen=True):
    """Text generated since the previous delta (tokens that arrived together, coalesced)."""

    text: str


class ToolCallDelta(StreamEvent, tag="tool_call", frozen=True):
    """A piece of a tool call: the first piece of each call has its id and name, later ones more arguments."""

    index: int
    id: str | None = None
    name: str | None = None
    arguments: str = ""


class Thinking(StreamEvent, tag="thinking", frozen=True):
    """A piece of the model's reasoning (Anthropic's extended thinking), before its answer: the first piece of each
    block has `text` empty or not; `signature` comes at a block's end; a redacted block is whole, in `redacted`."""

    index: int
    text: str = ""
    signature: str | None = None
    redacted: str | None = None


class Embedding(StreamEvent, tag="embedding", frozen=True):
    """One input's vector, of an embedding request (`purpose: embed`): float32 values, little-endian (base64 in JSON)."""

    index: int
    vector: bytes


class ToolCalls:
    """The pieces of an answer's tool calls (`ToolCallDelta`s) put back together, by index."""

    def __init__(self) -> None:
        self._calls: dict[int, tuple[str, str, list[str]]] = {}
        self.pieces = 0

    def __bool__(self) -> bool:
        return bool(self._calls)

    def add(self, piece: ToolCallDelta) -> None:
        call_id, name, arguments = self._calls.get(piece.index, ("", "", []))
        arguments.append(piece.arguments)
        self._calls[piece.index] = (piece.id or call_id, piece.name or name, arguments)
        self.pieces += 1

    def calls(self) -> list[ToolCall]:
        return [
            ToolCall(id=call_id, function=FunctionCall(name=name, arguments="".join(arguments)))
            for _, (call_id, name, arguments) in sorted(self._calls.items())
        ]


class Usage(StreamEvent, tag="usage", frozen=True):
    """The generation's token usage and cost; sent once, before `done`."""

    usage: TokenUsage


class Restart(StreamEvent, tag="restart", frozen=True):
    """The generation starts over (a worker died or a retry began): drop the text received so far."""

    attempt: int


class Error(StreamEvent, tag="error", frozen=True):
    """The generation failed; `done` with reason `error` follows."""

    code: ErrorCode
    message: str
    retry_after: float | None = None


class Done(StreamEvent, tag="done", frozen=True):
    """Always the last event of a request's stream."""

    reason: FinishReason


AnyStreamEvent = Start | InQueue | Sources | Started | Delta | ToolCallDelta | Thinking | Embedding | Usage | Restart | Error | Done


# --- The event log: inference.events -------------------------------------------------------------


class InferenceEvent(msgspec.Struct, frozen=True, kw_only=True, tag_field="type"):
    """Base of the lifecycle events of a generation, consumed by the conversation service and the log collector."""

    request_id: str
    model: str
    """The alias the client asked for."""
    provider: str = ""
    upstream_model: str = ""
    owner: str = ""
    key_id: str = ""
    at: float
    """Unix time (seconds) at which the event happened."""
    attempt: int = 1
    traceparent: str | None = None
    conversation_id: str | None = None
    message_id: str | None = None
    purpose: str = "chat"
    deployment: str | None = None
    """The alias's deployment that was called, when it has several."""
    route: str | None = None
    """Why that deployment: the routing strategy, and the deployments left out with their reasons."""
    cache: Literal["hit", "miss"] | None = None
    """The response cache's part: `hit` (answered from it, at no cost), `miss` (generated, then stored)."""


class Queued(InferenceEvent, tag="queued", frozen=True):
    """The gateway enqueued the request."""


class GenerationStarted(InferenceEvent, tag="started", frozen=True):
    """A worker took the request; `queue_wait_s` is how long it waited in the queue."""

    queue_wait_s: float = 0.0


class FirstToken(InferenceEvent, tag="first_token", frozen=True):
    """The first text came from the provider."""

    ttft_s: float
    """Seconds from the start of the generation to its first token."""


class Ended(InferenceEvent, frozen=True, kw_only=True):
    """Base of the terminal events: what the generation cost and how hard it was to get."""

    retries: int = 0
    """Provider calls retried (same model) before the end."""
    fallbacks: int = 0
    """Models fallen back to before the end."""


class Completed(Ended, tag="completed", frozen=True):
    """The generation finished normally."""

    text: str
    finish_reason: FinishReason
    tool_calls: list[ToolCall] | None = None
    usage: TokenUsage | None = None
    ttft_s: float | None = None
    duration_s: float = 0.0
    budget_period: str | None = None
    """The key's budget period, when it has a budget: follow-up work for this turn (its title) is charged to it too."""


class Failed(Ended, tag="failed", frozen=True):
    """The generation failed for good (after retries and fallbacks)."""

    code: ErrorCode
    message: str
    text: str = ""
    usage: TokenUsage | None = None
    duration_s: float = 0.0


class Cancelled(Ended, tag="cancelled", frozen=True):
    """The client cancelled; `text` is the partial answer."""

    text: str = ""
    usage: TokenUsage | None = None
    duration_s: float = 0.0


AnyInferenceEvent = Queued | GenerationStarted | FirstToken | Completed | Failed | Cancelled
