"""What a tenant may read of a provider's failure: its class and a safe message, never a secret or an internal address.

A provider's own error text can carry a (masked) API key, an internal `host:port` or a URL of
the deployment. When a provider answered with an error, tenants get a fixed sentence per error
class; for a request the provider refused as invalid its explanation is kept (it says what to
fix) with anything that looks like a secret, an address or a URL masked. Failures of the
platform's own making (a timeout, a missing adapter, a model's limit) keep their sentence, masked
the same way (a connection error names the URL it called). The full text goes only to the
worker's log, masked too.
"""

from __future__ import annotations

import re

from chatbot_contracts import ErrorCode

from .providers import ProviderError

_SECRETS = [
    (
        re.compile(r"(?i)\b(api[_-]?key|x-api-key|key|token|secret|password|authorization)(\s*[:=]\s*)[\"']?[^\s\"',;&]{4,}"),
        r"\1\2[redacted]",
    ),
    (re.compile(r"(?i)\b(bearer|basic)\s+[^\s\"',;&]{4,}"), r"\1 [redacted]"),
    (re.compile(r"\b(?:sk|pk|rk|sess)-[A-Za-z0-9_*.\-]{6,}"), "[redacted]"),
    (re.compile(r"\bAIza[0-9A-Za-z_*\-]{10,}"), "[redacted]"),
    (re.compile(r"\b[A-Za-z][A-Za-z0-9+.\-]*://[^\s\"'<>]+"), "[url]"),
    (re.compile(r"\b(?:\d{1,3}\.){3}\d{1,3}(?::\d{1,5})?\b"), "[address]"),
    (re.compile(r"\[[0-9a-fA-F:]{2,}\](?::\d{1,5})?"), "[address]"),
    (re.compile(r"\b[A-Za-z0-9][A-Za-z0-9.\-]*:\d{2,5}\b"), "[address]"),
    (re.compile(r"\b[A-Za-z0-9_\-]{32,}\b"), "[redacted]"),
]

PUBLIC: dict[ErrorCode, str] = {
    "authentication": "the model's provider did not accept the platform's credentials; an operator must fix its key",
    "permission": "the model's provider refused the platform access to this model",
    "bad_request": "the model's provider refused the request as invalid",
    "context_length_exceeded": "the conversation is longer than the model's context window",
    "rate_limited": "the model's provider is rate limiting the platform; retry later",
    "overloaded": "the model's provider is overloaded; retry later",
    "upstream_error": "the model's provider failed to answer",
    "timeout": "the model's provider did not answer in time",
    "network": "the model's provider could not be reached",
    "cancelled": "the request was cancelled",
    "deadline_exceeded": "the request ran past its deadline",
    "internal": "the platform failed to run this request",
}
MAX_DETAIL_CHARS = 300


def mask_secrets(text: str) -> str:
    """`text` with anything that looks like a credential, a URL or a network address replaced."""
    for pattern, replacement in _SECRETS:
        text = pattern.sub(replacement, text)
    return text


def public_message(error: ProviderError) -> str:
    """What the tenant reads of `error`: for a provider's answer, its class's sentence (plus its masked explanation of
    an invalid request); for a failure of the platform's own, its message masked."""
    if not error.upstream:
        return mask_secrets(error.message)[: MAX_DETAIL_CHARS * 2]
    sentence = PUBLIC.get(error.code, PUBLIC["internal"])
    if error.code in ("bad_request", "context_length_exceeded") and error.status is not None:
        detail = mask_secrets(error.message.partition(": ")[2] or error.message)[:MAX_DETAIL_CHARS]
        return f"{sentence}: {detail}" if detail else sentence
    return f"{sentence} (HTTP {error.status})" if error.status is not None else sentence
