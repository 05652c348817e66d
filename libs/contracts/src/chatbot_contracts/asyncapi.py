"""An AsyncAPI 3.0 document of the platform's streams, built from the contracts themselves (so it cannot drift)."""

from __future__ import annotations

from typing import Any

import msgspec

from .chat import ChatRequest
from .events import AnyInferenceEvent, AnyStreamEvent


def document(version: str = "0.1.0") -> dict[str, Any]:
    """Channels, their messages (each stream entry's `__data__` field, JSON) and who sends and receives them."""
    (request, stream_event, inference_event), components = msgspec.json.schema_components(
        [ChatRequest, AnyStreamEvent, AnyInferenceEvent], ref_template="#/components/schemas/{name}"
    )

    def message(name: str, payload: dict[str, Any], summary: str) -> dict[str, Any]:
        return {"name": name, "summary": summary, "contentType": "application/json", "payload": payload}

    channels = {
        "chatRequests": {
            "address": "chat.requests",
            "description": (
                "Work queue; read by consumer group `inference` (workers). Entries: one field `__data__`. With "
                "CHATBOT_STREAM_PARTITIONS > 1, one stream per partition: `chat.requests.{<partition tag>}`."
            ),
            "messages": {"chatRequest": message("ChatRequest", request, "One generation to run")},
        },
        "requestStream": {
            "address": "chat.stream.{request_id}",
            "description": "One request's events in order, `done` last; read by gateways with XREAD from any entry id (resume).",
            "parameters": {
                "request_id": {
                    "description": "The request id (its Redis Cluster hash tag); with several partitions the address is "
                    "`chat.stream.{<partition tag>}.<request_id>`."
                }
            },
            "messages": {
                "streamEvent": message("StreamEvent", stream_event, "start, queued, started, delta, tool_call, usage, restart, error, done")
            },
        },
        "inferenceEvents": {
            "address": "inference.events",
            "description": (
                "Lifecycle of every generation; read by groups `conversation` and `log-collector`. With several "
                "partitions, `inference.events.{<partition tag>}`, a request's events in its own partition."
            ),
            "messages": {
                "inferenceEvent": message("InferenceEvent", inference_event, "queued, started, first_token, completed, failed, cancelled")
            },
        },
        "deadLetters": {
            "address": "chat.requests.dead",
            "description": "Requests that failed on every attempt or could not be read; fields `__data__` and `error`.",
            "messages": {"deadLetter": message("ChatRequest", request, "The request as it was enqueued")},
        },
    }

    def operation(action: str, channel: str, who: str) -> dict[str, Any]:
        return {"action": action, "channel": {"$ref": f"#/channels/{channel}"}, "summary": who}

    return {
        "asyncapi": "3.0.0",
        "info": {
            "title": "Chatbot-LLM streams",
            "version": version,
            "description": "Redis Streams between the services; a key prefix may apply (CHATBOT_REDIS_NAMESPACE).",
        },
        "defaultContentType": "application/json",
        "channels": channels,
        "operations": {
            "enqueueRequest": operation("send", "chatRequests", "gateway"),
            "takeRequest": operation("receive", "chatRequests", "inference workers"),
            "writeEvents": operation("send", "requestStream", "the worker running the request"),
            "relayEvents": operation("receive", "requestStream", "gateways"),
            "logEvents": operation("send", "inferenceEvents", "inference workers"),
            "applyEvents": operation("receive", "inferenceEvents", "conversation service, log collector"),
            "setAside": operation("send", "deadLetters", "inference workers"),
        },
        "components": {"schemas": components},
    }
