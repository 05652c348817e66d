"""Images kept with messages: stored once, shown in the tree and the context, copied by a fork, gone with their
conversation, and never another owner's."""

from __future__ import annotations

import base64
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis.asyncio as aioredis

from chatbot_contracts import IMAGE_TOKENS, ImagePart, Keys, Registry
from chatbot_contracts.conversations import NewConversation, TurnRequest
from chatbot_contracts.knowledge import NewKnowledgeBase
from chatbot_conversation.attachments import Attachments, blob_store
from chatbot_conversation.db.engine import Database
from chatbot_conversation.errors import NotFound
from chatbot_conversation.knowledge.service import KnowledgeService, Upload, blob_folder
from chatbot_conversation.knowledge.vectors import vector_index
from chatbot_conversation.s3 import S3Store
from chatbot_conversation.service import ConversationService, Principal
from chatbot_conversation.settings import KnowledgeSettings, StoreSettings
from chatbot_devtools.platform import registry_toml
from chatbot_devtools.redis_server import free_port

ALICE = Principal(owner="alice")
BOB = Principal(owner="bob")
GIF = b"GIF89a\x01\x00\x01\x00\x00\x00\x00;"
INLINE = ImagePart(url=f"data:image/gif;base64,{base64.b64encode(GIF).decode()}")
LINKED = ImagePart(url="https://images.example.com/a.png")
S3_PACKAGE = Path(__file__).resolve().parents[3] / "tests" / "s3"


async def test_images_are_kept_shown_again_copied_and_deleted(service: ConversationService) -> None:
    made = await service.create(ALICE, NewConversation())
    first = await service.start_turn(ALICE, made.id, TurnRequest(request_id="r1", content="Look", images=[INLINE, LINKED]))
    assert first.messages[-1].images == [INLINE, LINKED]
    await service.finish_answer(first.assistant_message_id, status="complete", text="A dot.", model="m", usage=None, error=None)
    second = await service.start_turn(ALICE, made.id, TurnRequest(request_id="r2", content="Again?"))
    assert [m.images for m in second.messages if m.role == "user"] == [[INLINE, LINKED], None]

    tree = await service.get(ALICE, made.id)
    [kept, linked] = next(m for m in tree.messages if m.id == first.user_message_id).attachments
    assert (kept.media_type, kept.size, kept.url) == ("image/gif", len(GIF), None)
    assert (linked.url, linked.size) == (LINKED.url, 0)
    assert await service.attachment(ALICE, made.id, kept.id) == ("image/gif", GIF)
    with pytest.raises(NotFound):
        await service.attachment(BOB, made.id, kept.id)
    with pytest.raises(NotFound):
        await service.attachment(ALICE, made.id, linked.id)

    fork = await service.fork(ALICE, made.id, first.user_message_id)
    [copied, _] = (await service.get(ALICE, fork.id)).messages[0].attachments
    assert copied.id != kept.id
    await service.delete(ALICE, made.id)
    with pytest.raises(NotFound):
        await service.attachment(ALICE, made.id, kept.id)
    assert await service.attachment(ALICE, fork.id, copied.id) == ("image/gif", GIF), "the fork's copy outlives the original"


async def test_only_the_newest_images_are_shown_again(service: ConversationService) -> None:
    service.max_context_images = 2
    made = await service.create(ALICE, NewConversation())
    await service.start_turn(ALICE, made.id, TurnRequest(request_id="r1", content="one", images=[LINKED, INLINE]))
    turn = await service.start_turn(ALICE, made.id, TurnRequest(request_id="r2", content="two", images=[INLINE]))
    assert [m.images for m in turn.messages if m.role == "user"] == [[INLINE], [INLINE]]
    service.max_context_image_bytes = len(GIF)
    turn = await service.start_turn(ALICE, made.id, TurnRequest(request_id="r3", content="three", images=[INLINE, INLINE]))
    assert [m.images for m in turn.messages if m.role == "user"] == [None, None, [INLINE, INLINE]], "its own always go"


@pytest.fixture(scope="module")
def s3rver(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    """A real S3-compatible object store (s3rver, from tests/s3's pinned npm package) on a free port, and its data folder."""
    if shutil.which("node") is None or shutil.which("npm") is None:
        pytest.fail("node and npm are needed to run the S3-compatible store the attachment tests use (make test has them)")
    if not (S3_PACKAGE / "node_modules" / "s3rver").is_dir():
        subprocess.run(["npm", "ci", "--no-audit", "--no-fund"], cwd=S3_PACKAGE, check=True, capture_output=True, timeout=300)
    data = tmp_path_factory.mktemp("s3")
    port = free_port()
    command = ["node", str(S3_PACKAGE / "node_modules" / ".bin" / "s3rver"), "-d", str(data), "-a", "127.0.0.1", "-p", str(port)]
    server = subprocess.Popen([*command, "--silent", "--configure-bucket", "chatbot"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 20
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            break
        except OSError:
            if server.poll() is not None or time.monotonic() > deadline:
                server.kill()
                pytest.fail(f"s3rver did not start: {server.stderr.read().decode() if server.stderr else ''}")
            time.sleep(0.1)
    yield f"http://127.0.0.1:{port}", data
    server.terminate()
    server.wait(timeout=10)


def test_without_a_bucket_the_service_does_without_botocore() -> None:
    """The embedded default keeps images in a folder; the S3 client's library (about 16 MB a process) is not loaded."""
    probe = (
        "import sys; from chatbot_conversation import app; from chatbot_conversation.knowledge import worker; "
        "from chatbot_conversation.attachments import FolderStore, blob_store; from chatbot_conversation.settings import StoreSettings; "
        "assert isinstance(blob_store(StoreSettings()), FolderStore); print(sorted(m for m in sys.modules if m.split('.')[0] in ('botocore', 'aiobotocore')))"
    )
    answer = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert answer.stdout.strip() == "[]"


async def test_images_live_in_an_s3_compatible_bucket(
    service: ConversationService, s3rver: tuple[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    endpoint, data = s3rver
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "S3RVER")  # s3rver's own credentials
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "S3RVER")
    settings = StoreSettings(
        attachments_s3_bucket="chatbot",
        attachments_s3_prefix="attachments/",
        attachments_s3_endpoint=endpoint,
        attachments_s3_region="us-east-1",
    )
    store = blob_store(settings)
    assert isinstance(store, S3Store), "a bucket configured: the bucket is the store"
    await store.open()
    try:
        service.attachments = Attachments(store)
        made = await service.create(ALICE, NewConversation())
        turn = await service.start_turn(ALICE, made.id, TurnRequest(request_id="r1", content="Look", images=[INLINE, INLINE]))
        assert turn.messages[-1].images == [INLINE, INLINE], "read back from the bucket"
        [first, _] = next(m for m in (await service.get(ALICE, made.id)).messages if m.role == "user").attachments
        assert await service.attachment(ALICE, made.id, first.id) == ("image/gif", GIF)
        assert await store.get(made.id, first.id) == GIF
        stored = [p for p in data.rglob("*") if p.is_file() and made.id in str(p)]
        assert stored, "the objects are in the store's own data folder"
        await service.delete(ALICE, made.id)
        assert await store.get(made.id, first.id) is None, "a deleted conversation's objects are gone"
    finally:
        await store.close()


async def test_knowledge_base_documents_live_in_the_bucket_until_they_or_their_base_are_deleted(
    database: Database, redis: aioredis.Redis, namespace: str, s3rver: tuple[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    endpoint, data = s3rver
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "S3RVER")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "S3RVER")
    store = S3Store("chatbot", "attachments/", endpoint, "us-east-1")
    await store.open()
    registry = Registry.parse(
        registry_toml({"embed": {"provider": "openai", "mode": "embedding", "upstream_model": "text-embedding-3-small"}})
    )
    knowledge = KnowledgeService(database, registry, store, redis, Keys(namespace), vector_index(database), KnowledgeSettings())
    try:
        base = (await knowledge.create(ALICE, NewKnowledgeBase(name="handbooks"))).id
        kept = await knowledge.add_document(ALICE, base, Upload("a.md", "text/markdown", b"# Leave\nTwenty days."), None)
        gone = await knowledge.add_document(ALICE, base, Upload("b.txt", "text/plain", b"Parking is free."), None)
        assert await store.get(blob_folder(base), kept.document.id) == b"# Leave\nTwenty days."
        assert [p for p in data.rglob("*") if p.is_file() and gone.document.id in str(p)], "in the store's own data folder"
        await knowledge.delete_document(ALICE, base, gone.document.id)
        assert await store.get(blob_folder(base), gone.document.id) is None
        assert await store.get(blob_folder(base), kept.document.id) is not None, "the other document stays"
        await knowledge.delete(ALICE, base)
        assert await store.get(blob_folder(base), kept.document.id) is None, "a deleted knowledge base's files are gone"
    finally:
        await store.close()


async def test_images_count_against_the_context_window(service: ConversationService) -> None:
    """Each image shown again costs `IMAGE_TOKENS`: an old turn whose text fits is dropped when its images do not."""
    made = await service.create(ALICE, NewConversation(model="vision"))
    await service.start_turn(ALICE, made.id, TurnRequest(request_id="r1", content="first", images=[INLINE]))
    turn = await service.start_turn(ALICE, made.id, TurnRequest(request_id="r2", content="second", images=[INLINE]))
    assert [m.content for m in turn.messages if m.role == "user"] == ["second"]
    assert turn.context_tokens >= IMAGE_TOKENS
