"""Gateway errors and their one mapping to HTTP responses in OpenAI's error format."""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Any, TypeVar

import msgspec
import structlog
from litestar import Request, Response
from litestar.exceptions import HTTPException, ValidationException
from litestar.openapi.datastructures import ResponseSpec
from litestar.types import ExceptionHandlersMap

from chatbot_contracts import ErrorCode
from chatbot_contracts.codec import not_utf8
from chatbot_contracts.redis import TRANSIENT

log = structlog.get_logger()


class GatewayError(Exception):
    """Base of the errors a client can see: a status, an OpenAI error type and code, a message."""

    status_code = 500
    error_type = "api_error"
    code: str | None = None

    def __init__(self, message: str, *, code: str | None = None, param: str | None = None, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code
        self.param = param
        self.headers = headers or {}


class BadRequest(GatewayError):
    status_code = 400
    error_type = "invalid_request_error"


T = TypeVar("T")


def decode_body(raw: bytes, decoder: msgspec.json.Decoder[T], fields: str) -> T:
    """A request body decoded, or a 400 that says what is wrong and where (`fields`: what an empty body lacks)."""
    if not raw.strip():
        raise BadRequest(f"the request body is empty; send a JSON object with {fields}")
    try:
        return decoder.decode(raw)
    except msgspec.ValidationError as exc:
        raise BadRequest(f"invalid request: {exc}") from exc
    except msgspec.DecodeError as exc:
        raise BadRequest(f"the request body is not valid JSON: {exc}") from exc
    except UnicodeDecodeError as exc:
        raise body_not_utf8(raw) from exc


def body_not_utf8(raw: bytes) -> BadRequest:
    """The 400 for a JSON body that msgspec refused with `UnicodeDecodeError` (not one of its own errors), naming the
    first byte that is not UTF-8."""
    return BadRequest(f"the request body is not valid JSON: {not_utf8(raw)}")


class GatewayRequest(Request[Any, Any, Any]):
    """Litestar's request, whose JSON body (a handler's typed `data`) that is not UTF-8 is a 400 saying where, like any
    other malformed body: Litestar lets msgspec's `UnicodeDecodeError` through, which would answer 500."""

    async def json(self) -> Any:
        try:
            return await super().json()
        except UnicodeDecodeError as exc:
            raise body_not_utf8(await self.body()) from exc


class Unprocessable(GatewayError):
    """Well-formed, but past a limit of the platform."""

    status_code = 422
    error_type = "invalid_request_error"
    code = "limit_exceeded"


class Unauthorized(GatewayError):
    status_code = 401
    error_type = "authentication_error"
    code = "invalid_api_key"


class TooManyFailures(GatewayError):
    """This client address presented too many unknown keys lately."""

    status_code = 429
    error_type = "rate_limit_error"
    code = "too_many_failed_authentications"


class Forbidden(GatewayError):
    status_code = 403
    error_type = "permission_error"
    code = "forbidden"


class NotFound(GatewayError):
    status_code = 404
    error_type = "invalid_request_error"
    code = "not_found"


class ModelNotFound(NotFound):
    code = "model_not_found"


class Overloaded(GatewayError):
    """The platform as a whole is past its admission bound."""

    status_code = 503
    error_type = "overloaded_error"
    code = "overloaded"


class TooManyInFlight(GatewayError):
    """This key has as many requests running as it may."""

    status_code = 429
    error_type = "rate_limit_error"
    code = "too_many_requests_in_flight"


class Unavailable(GatewayError):
    status_code = 503
    error_type = "service_unavailable"
    code = "service_unavailable"


STATUS_BY_CODE: Mapping[str, tuple[int, str]] = MappingProxyType(
    {
        "authentication": (502, "api_error"),
        "permission": (403, "permission_error"),
        "bad_request": (400, "invalid_request_error"),
        "context_length_exceeded": (400, "invalid_request_error"),
        "rate_limited": (429, "rate_limit_error"),
        "overloaded": (503, "overloaded_error"),
        "upstream_error": (502, "api_error"),
        "timeout": (504, "timeout_error"),
        "network": (502, "api_error"),
        "cancelled": (499, "cancelled"),
        "deadline_exceeded": (504, "timeout_error"),
        "internal": (500, "api_error"),
    }
)
"""The HTTP status and OpenAI error type of each class of generation failure."""


class UpstreamFailure(GatewayError):
    """A generation failed; status and type follow the failure's class."""

    def __init__(self, code: ErrorCode, message: str, retry_after: float | None = None) -> None:
        headers = {"Retry-After": str(max(1, round(retry_after)))} if retry_after else None
        super().__init__(message, code=code, headers=headers)
        self.status_code, self.error_type = STATUS_BY_CODE.get(code, (500, "api_error"))


class ErrorBody(msgspec.Struct, kw_only=True):
    message: str
    type: str
    code: str | None = None
    param: str | None = None


class ErrorResponse(msgspec.Struct, kw_only=True):
    """OpenAI's error envelope: `{"error": {"message", "type", "code", "param"}}`."""

    error: ErrorBody


ANTHROPIC_PATHS = frozenset({"/v1/messages"})
"""Routes whose errors use Anthropic's envelope instead of OpenAI's."""
_ANTHROPIC_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    503: "overloaded_error",
    529: "overloaded_error",
}


def error_type_for(code: ErrorCode, *, anthropic: bool = False) -> str:
    """The error type a client sees for a failure class (OpenAI's names, or Anthropic's)."""
    status, openai_type = STATUS_BY_CODE.get(code, (500, "api_error"))
    return _ANTHROPIC_TYPES.get(status, "api_error") if anthropic else openai_type


def error_response(
    status: int,
    message: str,
    error_type: str,
    code: str | None,
    headers: dict[str, str] | None = None,
    param: str | None = None,
    path: str = "",
) -> Response[Any]:
    """The one place errors become responses: OpenAI's envelope, or Anthropic's on its routes."""
    if path in ANTHROPIC_PATHS:
        body: Any = {"type": "error", "error": {"type": _ANTHROPIC_TYPES.get(status, "api_error"), "message": message}}
        return Response(body, status_code=status, headers=headers)
    return Response(
        ErrorResponse(error=ErrorBody(message=message, type=error_type, code=code, param=param)),
        status_code=status,
        headers=headers,
    )


_HTTP_TYPES = {
    400: ("invalid_request_error", "invalid_request"),
    401: ("authentication_error", "invalid_api_key"),
    403: ("permission_error", "forbidden"),
    404: ("invalid_request_error", "not_found"),
    405: ("invalid_request_error", "method_not_allowed"),
    413: ("invalid_request_error", "request_too_large"),
    429: ("rate_limit_error", "rate_limited"),
}


def _detail(item: dict[str, Any]) -> str:
    where = item.get("key")
    source = item.get("source")
    text = str(item.get("message", ""))
    if where and "- at `" not in text:
        text += f" - at `$.{where}`" if source == "body" else f" - at {source or 'a'} parameter `{where}`"
    return text


def handle_gateway_error(request: Request[Any, Any, Any], exc: GatewayError) -> Response[Any]:
    if exc.status_code in (429, 503) and (metrics := getattr(request.app.state, "metrics", None)) is not None:
        metrics.refusals.labels(exc.code or "unknown").inc()
    return error_response(exc.status_code, exc.message, exc.error_type, exc.code, exc.headers, exc.param, request.url.path)


def handle_http_exception(request: Request[Any, Any, Any], exc: HTTPException) -> Response[Any]:
    error_type, code = _HTTP_TYPES.get(exc.status_code, ("api_error", None))
    message = exc.detail
    if exc.status_code == 404:
        message = f"no route {request.method} {request.url.path}"
    elif exc.status_code == 405:
        message = f"method {request.method} is not allowed on {request.url.path}"
    elif exc.status_code == 413:
        message = f"request body is larger than the {request.app.request_max_body_size} bytes allowed"
    elif isinstance(exc, ValidationException) and isinstance(exc.extra, list) and exc.extra:
        # Litestar's own validation (typed bodies and parameters): name every failing place.
        details = "; ".join(_detail(item) for item in exc.extra if isinstance(item, dict))
        message = f"invalid request: {details}" if details else message
    return error_response(exc.status_code, message, error_type, code, exc.headers, path=request.url.path)


def handle_redis_error(request: Request[Any, Any, Any], exc: Exception) -> Response[Any]:
    """Redis away, restarting, or a cluster's master being replaced (`TRANSIENT`): 503, worth retrying shortly."""
    log.error("redis.unavailable", path=request.url.path, error=str(exc))
    return error_response(
        503,
        "the platform's message broker (Redis) is unreachable; try again shortly",
        "service_unavailable",
        "redis_unavailable",
        {"Retry-After": "1"},
    )


def handle_too_deep(request: Request[Any, Any, Any], exc: RecursionError) -> Response[Any]:
    """msgspec stops at a nesting depth (Python's recursion limit): the body was refused, the process is fine."""
    return error_response(
        400, "invalid request: the JSON body is nested too deeply", "invalid_request_error", "invalid_json", path=request.url.path
    )


def handle_unexpected(request: Request[Any, Any, Any], exc: Exception) -> Response[Any]:
    log.exception("request.failed", path=request.url.path)
    return error_response(500, "internal error; it has been logged", "api_error", "internal", path=request.url.path)


EXCEPTION_HANDLERS: ExceptionHandlersMap = {
    GatewayError: handle_gateway_error,
    HTTPException: handle_http_exception,
    **dict.fromkeys(TRANSIENT, handle_redis_error),
    RecursionError: handle_too_deep,
    Exception: handle_unexpected,
}


class AnthropicErrorBody(msgspec.Struct, kw_only=True):
    type: str
    message: str


class AnthropicErrorResponse(msgspec.Struct, kw_only=True):
    """Anthropic's error envelope: `{"type": "error", "error": {"type", "message"}}`."""

    type: str = "error"
    error: AnthropicErrorBody


_DOCUMENTED = {
    400: "the request is malformed or asks for something unsupported",
    401: "no key, or an unknown or revoked one",
    403: "the key may not do this",
    404: "no such route, model or resource (or another owner's)",
    413: "the body is too large",
    422: "well-formed, but past a limit",
    429: "a rate limit, budget or in-flight bound; see Retry-After",
    502: "the provider failed",
    503: "overloaded, or a part of the platform is unreachable; see Retry-After",
    504: "no answer before the deadline",
}


def document_errors(handler: Any) -> Any:
    """Declare the error responses a route can give, in the envelope it really uses, for its OpenAPI entry."""
    envelope = AnthropicErrorResponse if handler.paths & ANTHROPIC_PATHS else ErrorResponse
    documented = {
        status: ResponseSpec(data_container=envelope, description=text, generate_examples=False) for status, text in _DOCUMENTED.items()
    }
    handler.responses = {**documented, **(handler.responses or {})}
    return handler
