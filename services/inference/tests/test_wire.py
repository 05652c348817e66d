"""The provider calls' HTTP/1.1 client against scripted servers: framings, encodings, TLS, proxies, kept-alive connections.

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

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from chatbot_inference.providers.base import ProviderError
from chatbot_inference.providers.http import streaming_post
from chatbot_inference.providers.wire import Client, ConnectTimeout, HttpError, InvalidRequest

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


async def body_of(client: Client, url: str, headers: dict[str, str] | None = None) -> tuple[int, bytes]:
    async with client.post(url, b'{"q": 1}', headers or {"content-type": "application/json"}) as response:
        return response.status, await response.read()


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
    first = heads[0].decode()
    assert first.startswith("POST /length HTTP/1.1\r\n") and f"Host: 127.0.0.1:{port}\r\n" in first and "Content-Length: 8\r\n" in first


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
        async with client.post(url, b"", {}) as response:
            assert await response.readany() == b"first"  # and left before the end
        assert await body_of(client, url) == (200, b"firstlast")
        assert connections == 2, "a connection with a body left unread is not reused"


async def test_a_kept_alive_connection_the_server_dropped_is_replaced_and_the_call_sent_again(
    serve: Callable[..., Awaitable[tuple[int, list[bytes]]]],
) -> None:
    """The server closes an idle connection just as the next request goes out: nothing of it was read, so it is sent anew."""
    served = 0

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal served
        await read_request(reader)
        served += 1
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
        await writer.drain()
        await reader.read(1)  # the next request's first byte: close without an answer

    port, _ = await serve(answer)
    async with Client(connect_timeout_s=2) as client:
        for _ in range(3):
            assert await body_of(client, f"http://127.0.0.1:{port}/") == (200, b"ok")
    assert served == 3


async def test_gzip_and_deflate_bodies_are_decoded_and_other_encodings_refused(
    serve: Callable[..., Awaitable[tuple[int, list[bytes]]]],
) -> None:
    import zlib

    encoded = {"/gzip": (b"gzip", gzip.compress(b"x" * 1000)), "/deflate": (b"deflate", zlib.compress(b"x" * 1000)), "/br": (b"br", b"??")}

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            head, _ = await read_request(reader)
            encoding, body = encoded[head.split(b" ")[1].decode()]
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Encoding: %s\r\nContent-Length: %d\r\n\r\n%s" % (encoding, len(body), body))

    port, _ = await serve(answer)
    async with Client(connect_timeout_s=2) as client:
        assert await body_of(client, f"http://127.0.0.1:{port}/gzip") == (200, b"x" * 1000)
        assert await body_of(client, f"http://127.0.0.1:{port}/deflate") == (200, b"x" * 1000)
        with pytest.raises(HttpError, match="content encoding 'br'"):
            await body_of(client, f"http://127.0.0.1:{port}/br")


async def test_an_interim_answer_is_skipped_and_headers_are_read_by_lowercase_name(
    serve: Callable[..., Awaitable[tuple[int, list[bytes]]]],
) -> None:
    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 100 Continue\r\nX-Interim: 1\r\n\r\n")
        writer.write(b"HTTP/1.1 429 Too Many Requests\r\nRetry-After: 7\r\nX-Seen: a\r\nX-Seen: b\r\nContent-Length: 4\r\n\r\nslow")

    port, _ = await serve(answer)
    async with Client(connect_timeout_s=2) as client, client.post(f"http://127.0.0.1:{port}/", b"", {}) as response:
        assert response.status == 429
        assert response.headers["retry-after"] == "7" and response.headers["x-seen"] == "a, b" and "x-interim" not in response.headers
        assert await response.read() == b"slow"


async def test_what_is_not_http_and_what_ends_too_soon_are_errors(serve: Callable[..., Awaitable[tuple[int, list[bytes]]]]) -> None:
    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head, _ = await read_request(reader)
        if b"/garbage" in head:
            writer.write(b"SSH-2.0-OpenSSH\r\n\r\n")
        else:
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nhalf")

    port, _ = await serve(answer)
    async with Client(connect_timeout_s=2) as client:
        with pytest.raises(HttpError, match="not valid HTTP"):
            await body_of(client, f"http://127.0.0.1:{port}/garbage")
        with pytest.raises(HttpError, match="closed before the response ended"):
            await body_of(client, f"http://127.0.0.1:{port}/short")


async def test_calls_that_cannot_be_made_say_why() -> None:
    async with Client(connect_timeout_s=2) as client:
        with pytest.raises(InvalidRequest, match="not an http or https URL"):
            await body_of(client, "ftp://example.com/")
        with pytest.raises(InvalidRequest, match="line break"):
            await body_of(client, "http://127.0.0.1:9/", {"authorization": "Bearer x\r\nX-Injected: 1"})
        with pytest.raises(HttpError, match=r"cannot connect to 127\.0\.0\.1:1"):
            await body_of(client, "http://127.0.0.1:1/")
    with pytest.raises(ProviderError) as refused:
        async with (
            Client(connect_timeout_s=2) as client,
            streaming_post(client, "http://127.0.0.1:1/", body=b"", headers={}, provider="openai"),
        ):
            pass
    assert refused.value.code == "network" and "cannot connect" in refused.value.message


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


async def test_https_checks_the_certificate_and_goes_through_a_connect_proxy(
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
    assert f"Host: localhost:{port}\r\n".encode() in heads[0]
    async with Client(connect_timeout_s=2) as client:  # the system's CA store does not know this certificate
        with pytest.raises(HttpError, match="CERTIFICATE_VERIFY_FAILED"):
            await body_of(client, url)

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

    proxy_port, proxy_heads = await serve(tunnel)
    monkeypatch.setenv("HTTPS_PROXY", f"http://me:p%40ss@127.0.0.1:{proxy_port}")
    monkeypatch.setenv("NO_PROXY", "")
    monkeypatch.delenv("no_proxy", raising=False)
    async with Client(connect_timeout_s=2, ssl_context=client_tls) as client:
        assert await body_of(client, url) == (200, b"secret")
        assert await body_of(client, url) == (200, b"secret")
    credentials = "Basic bWU6cEBzcw=="  # me:p@ss
    assert proxy_heads == [
        f"CONNECT localhost:{port} HTTP/1.1\r\nHost: localhost:{port}\r\nProxy-Authorization: {credentials}\r\n\r\n".encode()
    ], "one tunnel, kept alive, with the proxy URL's credentials"


async def test_a_connection_not_made_within_the_connect_timeout_is_a_timeout(
    serve: Callable[..., Awaitable[tuple[int, list[bytes]]]],
) -> None:
    """A server that accepts and never answers the TLS handshake: the handshake counts toward the connect timeout."""

    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while await reader.read(65536):  # the client's hello, unanswered, until it gives up
            pass

    port, _ = await serve(silent)
    async with Client(connect_timeout_s=0.2) as client:
        with pytest.raises(ConnectTimeout, match=r"no connection to localhost:\d+ within 0.2 s"):
            await body_of(client, f"https://localhost:{port}/")
