"""Bad input gets a 4xx in OpenAI's error format that says what was wrong and where; nothing is enqueued."""

from __future__ import annotations

from typing import Any

import pytest
import redis.asyncio as aioredis
from litestar import Litestar
from litestar.testing import AsyncTestClient

from chatbot_contracts import Keys

GOOD = {"model": "fast", "messages": [{"role": "user", "content": "Hi"}]}


def error_of(response: Any) -> dict[str, Any]:
    body = response.json()
    assert set(body) == {"error"}, body
    assert set(body["error"]) >= {"message", "type", "code"}
    return dict(body["error"])


@pytest.mark.parametrize(
    ("body", "status", "code", "message"),
    [
        (b"{not json", 400, None, "the request body is not valid JSON: JSON is malformed"),
        (b"", 400, None, "the request body is empty"),
        (b'["a"]', 400, None, "Expected `object`, got `array`"),
        (b'{"model": "fast"}', 400, None, "Object missing required field `messages`"),
        (b'{"model": "fast", "messages": []}', 400, None, "Expected `array` of length >= 1 - at `$.messages`"),
        (
            b'{"model": "fast", "messages": [{"role": "user", "content": "a"}, {"role": "user", "content": 7}]}',
            400,
            None,
            "at `$.messages[1].content`",
        ),
        (
            b'{"model": "fast", "messages": [{"role": "wizard", "content": "a"}]}',
            400,
            None,
            "Invalid value 'wizard' - at `$.messages[0].role`",
        ),
        (
            b'{"model": "fast", "messages": [{"role": "user", "content": "a"}], "temperature": 3}',
            400,
            None,
            "Expected `float` <= 2.0 - at `$.temperature`",
        ),
        (
            b'{"model": "fast", "messages": [{"role": "user", "content": "a"}], "tempreature": 1}',
            400,
            None,
            "Object contains unknown field `tempreature`",
        ),
        (b'{"model": "nope", "messages": [{"role": "user", "content": "a"}]}', 404, "model_not_found", "the model `nope` does not exist"),
        (
            b'{"model": "fast", "messages": [{"role": "user", "content": "a"}], "n": 2}',
            400,
            "unsupported_parameter",
            "`n` other than 1 is not supported",
        ),
        (
            b'{"model": "fast", "messages": [{"role": "user", "content": [{"type": "input_audio", "input_audio": {"data": "x"}}]}]}',
            400,
            "unsupported_parameter",
            "`input_audio` content (at $.messages[0].content[0]) is not supported",
        ),
        (
            b'{"model": "fast", "messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}]}',
            400,
            None,
            "the image at $.messages[0].content[0].image_url.url must be an https:// URL or a data: URL",
        ),
    ],
)
async def test_bad_chat_requests_are_refused_clearly(
    client: AsyncTestClient[Litestar], redis: aioredis.Redis, namespace: str, body: bytes, status: int, code: str | None, message: str
) -> None:
    response = await client.post("/v1/chat/completions", content=body, headers={"content-type": "application/json"})
    assert response.status_code == status, response.text
    error = error_of(response)
    assert message in error["message"]
    if code:
        assert error["code"] == code
    assert await redis.exists(Keys(namespace).chat_requests) == 0, "a refused request must not be enqueued"


@pytest.mark.parametrize(
    ("headers", "message"),
    [
        ({}, "missing API key"),
        ({"Authorization": "Bearer sk-wrong"}, "invalid API key"),
        ({"Authorization": "Basic dXNlcjpwYXNz"}, "missing API key"),
    ],
)
async def test_a_missing_or_wrong_key_is_401(app: Litestar, headers: dict[str, str], message: str) -> None:
    async with AsyncTestClient(app=app) as anonymous:
        for method, path in (("POST", "/v1/chat/completions"), ("GET", "/v1/models")):
            response = await anonymous.request(method, path, json=GOOD, headers=headers)
            assert response.status_code == 401
            error = error_of(response)
            assert error["type"] == "authentication_error" and message in error["message"]


async def test_an_oversized_body_is_413(client: AsyncTestClient[Litestar]) -> None:
    huge = {"model": "fast", "messages": [{"role": "user", "content": "x" * 30_000}]}
    response = await client.post("/v1/chat/completions", json=huge)
    assert response.status_code == 413
    assert "larger than the 20000 bytes allowed" in error_of(response)["message"]


async def test_unknown_routes_and_methods_answer_in_the_same_format(client: AsyncTestClient[Litestar]) -> None:
    missing = await client.get("/v1/nothing-here")
    assert missing.status_code == 404 and "no route GET /v1/nothing-here" in error_of(missing)["message"]
    wrong_method = await client.get("/v1/chat/completions")
    assert wrong_method.status_code == 405 and "method GET is not allowed" in error_of(wrong_method)["message"]


async def test_too_many_messages_is_422(make_app: Any, redis_url: str) -> None:
    async with AsyncTestClient(app=make_app(redis_url, CHATBOT_MAX_MESSAGES="3")) as client:
        client.headers["Authorization"] = "Bearer sk-test-admin-0123456789abcdef"
        many = {"model": "fast", "messages": [{"role": "user", "content": "a"}] * 4}
        response = await client.post("/v1/chat/completions", json=many)
        assert response.status_code == 422 and "the request has 4 messages; at most 3 are allowed" in error_of(response)["message"]


async def test_an_oversized_url_or_header_block_is_refused_by_name(client: AsyncTestClient[Litestar]) -> None:
    long_url = await client.get("/v1/models?q=" + "x" * 9000)
    assert long_url.status_code == 414 and "at most 8192 are allowed" in error_of(long_url)["message"]
    big_headers = await client.get("/v1/models", headers={"x-padding": "y" * 40_000})
    assert big_headers.status_code == 431 and "the headers have" in error_of(big_headers)["message"]
