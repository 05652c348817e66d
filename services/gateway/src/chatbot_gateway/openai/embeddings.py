"""`POST /v1/embeddings`: OpenAI's embeddings API for every `embedding` model of the registry.

An embedding request is a generation like any other (limits, budgets, routing, the inference log): its inputs
travel as user messages, and the worker answers with one `Embedding` event an input, float32 bytes that become
either OpenAI's base64 (the same bytes) or a list of floats.
"""

from __future__ import annotations

import base64
import struct
from typing import Annotated, Any, Literal

import msgspec
from litestar import Request, Response, post
from litestar.datastructures import State

from chatbot_contracts import Alias, ChatMessage, Embedding, Error, GenerationParams, Restart, TokenUsage, Usage

from ..auth import Principal
from ..errors import BadRequest, UpstreamFailure, decode_body
from ..generation import start

MAX_INPUTS = 2048
"""Inputs in one request, as OpenAI allows."""


class EmbeddingsRequest(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    model: Alias
    input: str | Annotated[list[str | int | list[int]], msgspec.Meta(min_length=1, max_length=MAX_INPUTS)]
    """Text, or a batch of texts (token ids, which OpenAI also takes, are refused by name)."""
    dimensions: Annotated[int, msgspec.Meta(ge=1, le=65_536)] | None = None
    encoding_format: Literal["float", "base64"] = "float"
    user: str | None = None


class EmbeddingItem(msgspec.Struct, kw_only=True):
    object: Literal["embedding"] = "embedding"
    index: int
    embedding: list[float] | str


class EmbeddingsUsage(msgspec.Struct, kw_only=True):
    prompt_tokens: int
    total_tokens: int


class EmbeddingsResponse(msgspec.Struct, kw_only=True):
    object: Literal["list"] = "list"
    data: list[EmbeddingItem]
    model: str
    usage: EmbeddingsUsage


_decoder = msgspec.json.Decoder(EmbeddingsRequest)


def _inputs(body: EmbeddingsRequest) -> list[str]:
    texts = [body.input] if isinstance(body.input, str) else body.input
    for index, text in enumerate(texts):
        if not isinstance(text, str):
            raise BadRequest("input as token ids is not supported by this gateway; send text", code="unsupported_parameter", param="input")
        if not text:
            where = "input" if isinstance(body.input, str) else f"input[{index}]"
            raise BadRequest(f"an input is empty (at $.{where}); every input needs text", param=where)
    return texts  # type: ignore[return-value]


def _encoded(vector: bytes, encoding: str) -> list[float] | str:
    if encoding == "base64":
        return base64.b64encode(vector).decode()
    return list(struct.unpack(f"<{len(vector) // 4}f", vector))


@post("/v1/embeddings", tags=["openai"], status_code=200)
async def create_embeddings(request: Request[Principal, Any, Any], state: State) -> Response[EmbeddingsResponse]:
    """Embed one input or a batch with an `embedding` model (`encoding_format` float or base64, `dimensions` where the
    model can shorten its vectors)."""
    body = decode_body(await request.body(), _decoder, "`model` and `input`")
    messages = [ChatMessage(role="user", content=text) for text in _inputs(body)]
    generation = await start(request, state, body.model, messages, GenerationParams(dimensions=body.dimensions), purpose="embed")
    vectors: dict[int, bytes] = {}
    usage: TokenUsage | None = None
    async for event in generation.events():
        match event:
            case Embedding(index=index, vector=vector):
                vectors[index] = vector
            case Usage(usage=reported):
                usage = reported
            case Restart():
                vectors.clear()
            case Error(code=code, message=message, retry_after=retry_after):
                raise UpstreamFailure(code, message, retry_after)
    if sorted(vectors) != list(range(len(messages))):
        raise UpstreamFailure("upstream_error", f"the model gave {len(vectors)} embeddings for {len(messages)} inputs", None)
    tokens = usage.input_tokens if usage else 0
    answer = EmbeddingsResponse(
        data=[EmbeddingItem(index=i, embedding=_encoded(vectors[i], body.encoding_format)) for i in range(len(messages))],
        model=body.model,
        usage=EmbeddingsUsage(prompt_tokens=tokens, total_tokens=tokens),
    )
    return Response(answer, headers=generation.headers)
