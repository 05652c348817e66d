"""The provider interface: a `ChatRequest` in, an async stream of events out. It knows no vendor."""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from typing import Protocol

from chatbot_contracts import ChatRequest, Delta, Done, Embedding, ErrorCode, ModelSpec, Thinking, TokenUsage, ToolCallDelta

ProviderEvent = Delta | ToolCallDelta | Thinking | Embedding | TokenUsage | Done
"""What an adapter yields: reasoning, text and tool call pieces as they come (or an embedding request's vectors), the
usage the provider reported, then `Done` last."""

RETRYABLE: frozenset[ErrorCode] = frozenset({"rate_limited", "overloaded", "upstream_error", "timeout", "network"})


class ProviderError(Exception):
    """A classified failure of a provider call."""

    def __init__(
        self,
        code: ErrorCode,
        message: str,
        *,
        status: int | None = None,
        retry_after: float | None = None,
        upstream: bool = False,
        at_limit: bool = False,
    ) -> None:
        super().__init__(message)
        self.code: ErrorCode = code
        self.message = message
        self.status = status
        self.retry_after = retry_after
        self.upstream = upstream or status is not None
        """The message holds the provider's own words (an error it answered or sent in its stream): tenants get its class."""
        self.at_limit = at_limit
        """The platform's own limit for the model (rpm, tpm, concurrency) refused the call before it was made."""

    @property
    def retryable(self) -> bool:
        return self.code in RETRYABLE


class Provider(Protocol):
    """One vendor's API. Closing the iterator (or cancelling its task) must close the upstream call."""

    name: str

    def stream(self, request: ChatRequest, spec: ModelSpec) -> AsyncIterator[ProviderEvent]: ...


class Embedder(Protocol):
    """A provider with an embeddings API: the vectors of a request's inputs (its messages' contents), in order."""

    name: str

    def embed(self, request: ChatRequest, spec: ModelSpec) -> AsyncIterator[ProviderEvent]: ...


def retry_after_seconds(headers: Mapping[str, str]) -> float | None:
    """Seconds from `retry-after-ms` or `retry-after` (seconds form), if the provider sent one."""
    if value := headers.get("retry-after-ms"):
        try:
            return float(value) / 1000
        except ValueError:
            pass
    if value := headers.get("retry-after"):
        try:
            return float(value)
        except ValueError:
            return None
    return None


def error_for_status(status: int, message: str, headers: Mapping[str, str], provider: str) -> ProviderError:
    """The error class of an HTTP failure; `message` is the provider's own explanation."""
    lowered = message.lower()
    code: ErrorCode
    if status == 401:
        code = "authentication"
    elif status == 403:
        code = "permission"
    elif status == 429:
        code = "rate_limited"
    elif status in (503, 529):
        code = "overloaded"
    elif status in (408, 504):
        code = "timeout"
    elif status >= 500:
        code = "upstream_error"
    elif "context_length" in lowered or "context length" in lowered or "maximum context" in lowered or "too many tokens" in lowered:
        code = "context_length_exceeded"
    else:
        code = "bad_request"
    return ProviderError(code, f"{provider} answered {status}: {message}", status=status, retry_after=retry_after_seconds(headers))
