"""The provider calls' HTTP client (aiohttp, as `client_session` sets it up) against scripted servers: framings, encodings,
TLS, proxies, kept-alive connections, and how each failure reads as a `ProviderError`.

The adapter tests cover what the fake providers send (chunked streams, error bodies with a length,
connections dropped mid-stream); these cover what real servers and networks may do besides.
"""

from __future__ import annotations

import asyncio
import datetime
import gzip
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import aiohttp
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from chatbot_contracts import ChatRequest, Delta, ModelSpec
from chatbot_inference.providers import OllamaProvider, OpenAIProvider
from chatbot_inference.providers.base import ProviderError
from chatbot_inference.providers.http import client_session, proxy_for, streaming_post

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


async def read_request(reader: asyncio.StreamReader) -> tuple[bytes, bytes]:
    """A request's head and body (framed by Content-Length, as the client sends it)."""
    head = await reader.readuntil(b"\r\n\r\n")
    length = next((int(line.split(b":")[1]) for line in head.split(b"\r\n") if line.lower().startswith(b"content-length:")), 0)
    return head, await reader.readexactly(length)


@pytest.fixture
async def serve() -> AsyncIterator[Callable[..., Awaitable[tuple[int, list[bytes]]]]]:
    """Starts a server on a free port that answers with `handler`; returns its port and the request heads it saw."""
    servers: list[asyncio.Server] = []

    async def start(handler: Handler, tls: ssl.SSLContext | None = None) -> tuple[int, list[bytes]]:
        heads: list[bytes] = []

        async def recording(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            try:
                await handler(_Recorded(reader, heads), writer)  # type: ignore[arg-type]
            except (asyncio.IncompleteReadError, ConnectionError):
                pass
            finally:
                writer.close()

        server = await asyncio.start_server(recording, "127.0.0.1", 0, ssl=tls)
        servers.append(server)
        return server.sockets[0].getsockname()[1], heads

    yield start
    for server in servers:
        server.close()


async def test_bytes_that_are_not_utf8_cost_a_character_of_an_event_stream_and_fail_any_other_answer_clearly(
    serve: Callable[..., Awaitable[tuple[int, list[bytes]]]], new_request: Callable[..., ChatRequest]
) -> None:
    """A provider that cuts a character in two, or sends another encoding. msgspec refuses such bytes with an error of
    Python's, not its own: a stream's passed for a call that could not be made (the client's bad request, not tried
    again), so did an overloaded provider's refusal, and a whole answer's escaped as no provider error at all."""
    answers = {
        "/sse/chat/completions": (200, b"text/event-stream", b'data: {"choices": [{"delta": {"content": "caf\xe9"}}]}\n\ndata: [DONE]\n\n'),
        "/ndjson/api/chat": (200, b"application/x-ndjson", b'{"message": {"role": "assistant", "content": "caf\xe9"}, "done": false}\n'),
        "/error/chat/completions": (503, b"application/json", b'{"error": {"message": "caf\xe9 is busy"}}'),
        "/whole/embeddings": (200, b"application/json", b'{"data": [{"index": 0, "embedding": "\xe9"}]}'),
    }

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            head, _ = await read_request(reader)
            status, kind, body = answers[head.split(b" ")[1].decode()]
            writer.write(b"HTTP/1.1 %d Status\r\nContent-Type: %s\r\nContent-Length: %d\r\n\r\n%s" % (status, kind, len(body), body))

    port, _ = await serve(answer)

    def spec(provider: str, path: str) -> ModelSpec:
        return ModelSpec(provider=provider, upstream_model="m", base_url=f"http://127.0.0.1:{port}/{path}", max_output_tokens=64)  # type: ignore[arg-type]

    async with Client(connect_timeout_s=2) as client:
        events = [event async for event in OpenAIProvider(client).stream(new_request(), spec("openai", "sse"))]
        assert "".join(e.text for e in events if isinstance(e, Delta)) == "caf\ufffd"
        with pytest.raises(ProviderError) as malformed:
            [event async for event in OllamaProvider(client).stream(new_request(), spec("ollama", "ndjson"))]
        assert malformed.value.code == "upstream_error" and "ollama: malformed line" in malformed.value.message
        with pytest.raises(ProviderError) as refused:
            [event async for event in OpenAIProvider(client).stream(new_request(), spec("openai", "error"))]
        assert refused.value.code == "overloaded" and "caf\ufffd is busy" in refused.value.message
        with pytest.raises(ProviderError) as unreadable:
            [event async for event in OpenAIProvider(client).embed(new_request(purpose="embed"), spec("openai", "whole"))]
        assert unreadable.value.code == "upstream_error" and "openai: malformed answer" in unreadable.value.message


class _Recorded:
    """A server's reader that notes each request head it reads."""

    def __init__(self, reader: asyncio.StreamReader, heads: list[bytes]) -> None:
        self._reader = reader
        self.heads = heads

    async def readuntil(self, separator: bytes) -> bytes:
        data = await self._reader.readuntil(separator)
        self.heads.append(data)
        return data

    async def readexactly(self, n: int) -> bytes:
        return await self._reader.readexactly(n)

    async def read(self, n: int) -> bytes:
        return await self._reader.read(n)


def Client(connect_timeout_s: float, ssl_context: ssl.SSLContext | None = None) -> aiohttp.ClientSession:
    return client_session(connect_timeout_s, ssl_context=ssl_context)


async def body_of(client: aiohttp.ClientSession, url: str, headers: dict[str, str] | None = None) -> tuple[int, bytes]:
    """Status and body of a POST through `streaming_post`, as an adapter makes it (an error status raises)."""
    async with streaming_post(
        client, url, body=b'{"q": 1}', headers=headers or {"content-type": "application/json"}, provider="openai"
    ) as body:
        return body.response.status, await body.response.read()


def failure(error: pytest.ExceptionInfo[ProviderError]) -> tuple[str, str]:
    return error.value.code, error.value.message


async def test_bodies_framed_by_length_by_chunks_and_by_the_close_are_read_whole(
    serve: Callable[..., Awaitable[tuple[int, list[bytes]]]],
) -> None:
    framings = {
        "/length": b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello",
        "/chunks": b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nhel\r\n2\r\nlo\r\n0\r\n\r\n",
        "/close": b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nhel",
    }

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            head, _ = await read_request(reader)
            path = head.split(b" ")[1].decode()
            writer.write(framings[path])
            if path == "/close":
                await writer.drain()
                writer.write(b"lo")  # the rest of a body only the close ends
                return

    port, heads = await serve(answer)
    async with Client(connect_timeout_s=2) as client:
        for path in framings:
            assert await body_of(client, f"http://127.0.0.1:{port}{path}") == (200, b"hello"), path
    assert len([head for head in heads if head.startswith(b"POST")]) == 3
    first = heads[0].decode().lower()
    assert first.startswith("post /length http/1.1\r\n") and f"host: 127.0.0.1:{port}\r\n" in first and "content-length: 8\r\n" in first
    assert "user-agent: chatbot-llm-inference\r\n" in first


async def test_a_kept_alive_connection_carries_the_next_call_and_a_half_read_one_does_not(
    serve: Callable[..., Awaitable[tuple[int, list[bytes]]]],
) -> None:
    connections = 0

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal connections
        connections += 1
        while True:
            await read_request(reader)
            writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nfirst\r\n")
            await writer.drain()
            await asyncio.sleep(0.01)
            writer.write(b"4\r\nlast\r\n0\r\n\r\n")

    port, _ = await serve(answer)
    url = f"http://127.0.0.1:{port}/v1"
    async with Client(connect_timeout_s=2) as client:
        assert await body_of(client, url) == (200, b"firstlast")
        assert await body_of(client, url) == (200, b"firstlast")
        assert connections == 1
        async with streaming_post(client, url, body=b"", headers={}, provider="openai") as body:
            assert await body.response.content.readany() == b"first"  # and left before the end
        assert await body_of(client, url) == (200, b"firstlast")
        assert connections == 2, "a connection with a body left unread is not reused"


async def test_a_cookie_a_provider_sets_is_not_sent_with_later_calls(
    serve: Callable[..., Awaitable[tuple[int, list[bytes]]]],
) -> None:
    """One session carries every tenant's calls: a cookie set in the answer to one call (Cloudflare, in front of many
    providers, sets two) must not go with the next, where the provider could link one tenant's calls to another's."""

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            await read_request(reader)
            writer.write(b"HTTP/1.1 200 OK\r\nSet-Cookie: __cf_bm=tenant-a; Path=/\r\nContent-Length: 2\r\n\r\nok")

    port, heads = await serve(answer)
    # By name, not address: a cookie jar keeps no cookies from an IP address.
    url = f"http://localhost:{port}/v1/chat/completions"
    async with Client(connect_timeout_s=2) as client:
        answers = [await body_of(client, url) for _ in range(2)]
    assert answers == [(200, b"ok")] * 2
    calls = [head.decode().lower() for head in heads if head.startswith(b"POST")]
    assert len(calls) == 2
    assert all("cookie:" not in call for call in calls), calls[1]


async def test_a_kept_alive_connection_the_server_closed_while_idle_is_replaced(
    serve: Callable[..., Awaitable[tuple[int, list[bytes]]]],
) -> None:
    """Servers close idle connections after a while of their own: the next call goes out on a new one, and succeeds."""
    connections = 0

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal connections
        connections += 1
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
        await writer.drain()
        await asyncio.sleep(0.05)  # idle a moment, then closed (by `serve`)

    port, _ = await serve(answer)
    async with Client(connect_timeout_s=2) as client:
        for _ in range(3):
            assert await body_of(client, f"http://127.0.0.1:{port}/") == (200, b"ok")
            await asyncio.sleep(0.2)
    assert connections == 3


async def test_a_pool_is_bounded_per_origin(serve: Callable[..., Awaitable[tuple[int, list[bytes]]]]) -> None:
    """Past `per_origin` connections to one server, a call waits for a free one: never more sockets than the bound."""
    open_now = most = 0

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal open_now, most
        open_now += 1
        most = max(most, open_now)
        try:
            while True:
                await read_request(reader)
                await asyncio.sleep(0.05)
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
        finally:
            open_now -= 1

    port, _ = await serve(answer)
    async with client_session(2, per_origin=3) as client:
        results = await asyncio.gather(*(body_of(client, f"http://127.0.0.1:{port}/") for _ in range(12)))
    assert results == [(200, b"ok")] * 12
    assert most == 3


async def test_gzip_and_deflate_bodies_are_decoded(serve: Callable[..., Awaitable[tuple[int, list[bytes]]]]) -> None:
    import zlib

    encoded = {"/gzip": (b"gzip", gzip.compress(b"x" * 1000)), "/deflate": (b"deflate", zlib.compress(b"x" * 1000))}

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            head, _ = await read_request(reader)
            encoding, body = encoded[head.split(b" ")[1].decode()]
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Encoding: %s\r\nContent-Length: %d\r\n\r\n%s" % (encoding, len(body), body))

    port, _ = await serve(answer)
    async with Client(connect_timeout_s=2) as client:
        assert await body_of(client, f"http://127.0.0.1:{port}/gzip") == (200, b"x" * 1000)
        assert await body_of(client, f"http://127.0.0.1:{port}/deflate") == (200, b"x" * 1000)


async def test_an_interim_answer_is_skipped_and_an_error_status_is_the_providers_error(
    serve: Callable[..., Awaitable[tuple[int, list[bytes]]]],
) -> None:
    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 100 Continue\r\nX-Interim: 1\r\n\r\n")
        body = b'{"error": {"message": "slow down"}}'
        writer.write(b"HTTP/1.1 429 Too Many Requests\r\nretry-after: 7\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))

    port, _ = await serve(answer)
    async with Client(connect_timeout_s=2) as client:
        with pytest.raises(ProviderError) as refused:
            await body_of(client, f"http://127.0.0.1:{port}/")
    assert refused.value.code == "rate_limited" and "slow down" in refused.value.message
    assert refused.value.retry_after == 7, "Retry-After is read whatever the case of its name"


async def test_what_is_not_http_and_what_ends_too_soon_are_network_errors(
    serve: Callable[..., Awaitable[tuple[int, list[bytes]]]],
) -> None:
    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head, _ = await read_request(reader)
        if b"/garbage" in head:
            writer.write(b"SSH-2.0-OpenSSH\r\n\r\n")
        else:
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nhalf")

    port, _ = await serve(answer)
    async with Client(connect_timeout_s=2) as client:
        with pytest.raises(ProviderError) as garbage:
            await body_of(client, f"http://127.0.0.1:{port}/garbage")
        assert garbage.value.code == "network" and f"127.0.0.1:{port}/garbage" in garbage.value.message
        with pytest.raises(ProviderError) as short:
            await body_of(client, f"http://127.0.0.1:{port}/short")
        assert short.value.code == "network"


async def test_calls_that_cannot_be_made_say_why_and_an_answer_an_adapter_cannot_read_is_the_providers(
    serve: Callable[..., Awaitable[tuple[int, list[bytes]]]],
) -> None:
    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")

    port, heads = await serve(answer)
    async with Client(connect_timeout_s=2) as client:
        with pytest.raises(ProviderError) as scheme:
            await body_of(client, "ftp://example.com/")
        assert failure(scheme)[0] == "bad_request" and "ftp://example.com/" in failure(scheme)[1]
        with pytest.raises(ProviderError) as injected:
            await body_of(client, f"http://127.0.0.1:{port}/", {"authorization": "Bearer x\r\nX-Injected: 1"})
        assert failure(injected)[0] == "bad_request" and "header" in failure(injected)[1]
        assert heads == [], "nothing of it was sent"
        with pytest.raises(ProviderError) as refused:
            await body_of(client, "http://127.0.0.1:1/")
        assert failure(refused)[0] == "network" and "127.0.0.1:1" in failure(refused)[1]
        # A `ValueError` while an adapter reads the answer (a field it cannot convert) is the provider's fault, worth
        # trying again; it passed for a call refused before it was sent, the client's bad request.
        with pytest.raises(ProviderError) as unread:
            async with streaming_post(client, f"http://127.0.0.1:{port}/", body=b"{}", headers={}, provider="openai") as body:
                int(await body.whole())
        assert failure(unread) == ("upstream_error", "openai: malformed answer (invalid literal for int() with base 10: b'ok')")
        assert unread.value.retryable


def _certificate(directory: Path) -> tuple[ssl.SSLContext, ssl.SSLContext]:
    """A server context with a fresh certificate for `localhost`, and a client context that trusts only it."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost")]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    (directory / "cert.pem").write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    (directory / "key.pem").write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server.load_cert_chain(directory / "cert.pem", directory / "key.pem")
    return server, ssl.create_default_context(cafile=directory / "cert.pem")


async def test_https_checks_the_certificate_and_goes_through_connect_proxies_http_and_https(
    serve: Callable[..., Awaitable[tuple[int, list[bytes]]]], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    server_tls, client_tls = _certificate(tmp_path)

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            await read_request(reader)
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\nsecret")

    port, heads = await serve(answer, server_tls)
    url = f"https://localhost:{port}/v1"
    async with Client(connect_timeout_s=2, ssl_context=client_tls) as client:
        assert await body_of(client, url) == (200, b"secret")
    assert f"host: localhost:{port}\r\n".encode() in heads[0].lower()
    async with Client(connect_timeout_s=2) as client:  # the system's CA store does not know this certificate
        with pytest.raises(ProviderError) as unknown:
            await body_of(client, url)
        assert unknown.value.code == "network" and "CERTIFICATE_VERIFY_FAILED" in unknown.value.message

    async def tunnel(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        host, _, target_port = head.split(b" ")[1].decode().rpartition(":")
        upstream_reader, upstream_writer = await asyncio.open_connection("127.0.0.1" if host == "localhost" else host, int(target_port))
        writer.write(b"HTTP/1.1 200 Connection established\r\n\r\n")

        async def pipe(source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
            while data := await source.read(65536):
                sink.write(data)
            sink.close()

        await asyncio.gather(pipe(reader, upstream_writer), pipe(upstream_reader, writer), return_exceptions=True)

    monkeypatch.setenv("NO_PROXY", "")
    monkeypatch.delenv("no_proxy", raising=False)
    monkeypatch.delenv("https_proxy", raising=False)
    for scheme, proxy_tls in (("http", None), ("https", server_tls)):
        proxy_port, proxy_heads = await serve(tunnel, proxy_tls)
        monkeypatch.setenv("HTTPS_PROXY", f"{scheme}://me:p%40ss@localhost:{proxy_port}")
        async with Client(connect_timeout_s=2, ssl_context=client_tls) as client:
            assert await body_of(client, url) == (200, b"secret"), scheme
            assert await body_of(client, url) == (200, b"secret"), scheme
        assert len(proxy_heads) == 1, f"one tunnel through the {scheme} proxy, kept alive"
        connect = proxy_heads[0].decode()
        assert connect.startswith(f"CONNECT localhost:{port} HTTP/1.1\r\n"), scheme
        assert "Proxy-Authorization: Basic bWU6cEBzcw==\r\n" in connect, "the proxy URL's credentials (me:p@ss)"


async def test_a_connection_not_made_within_the_connect_timeout_is_a_timeout(
    serve: Callable[..., Awaitable[tuple[int, list[bytes]]]],
) -> None:
    """A server that accepts and never answers the TLS handshake: the handshake counts toward the connect timeout."""

    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while await reader.read(65536):  # the client's hello, unanswered, until it gives up
            pass

    port, _ = await serve(silent)
    async with Client(connect_timeout_s=0.2) as client:
        started = asyncio.get_running_loop().time()
        with pytest.raises(ProviderError) as late:
            await body_of(client, f"https://localhost:{port}/")
        assert late.value.code == "timeout" and "connect timeout" in late.value.message
        assert asyncio.get_running_loop().time() - started < 2


def test_the_proxy_for_a_call_is_the_one_the_environment_names(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("http_proxy", "https_proxy", "all_proxy", "no_proxy", "HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY"):
        monkeypatch.delenv(name, raising=False)
    assert proxy_for("https://api.openai.com/v1") == (None, None)
    monkeypatch.setenv("HTTPS_PROXY", "https://proxy.internal:3129")
    monkeypatch.setenv("ALL_PROXY", "http://u:p%3Aw@fallback.internal:8080")
    monkeypatch.setenv("NO_PROXY", "localhost,.svc.cluster.local")
    assert proxy_for("https://api.openai.com/v1") == ("https://proxy.internal:3129", None)
    assert proxy_for("http://vllm.internal/v1") == ("http://fallback.internal:8080", {"Proxy-Authorization": "Basic dTpwOnc="})
    assert proxy_for("http://ollama.ai.svc.cluster.local:11434/api/chat") == (None, None), "NO_PROXY covers it"
    monkeypatch.setenv("HTTPS_PROXY", "socks5://proxy.internal:1080")
    with pytest.raises(ValueError, match=r"socks5://proxy\.internal is not supported"):
        proxy_for("https://api.openai.com/v1")
