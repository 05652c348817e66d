"""Images kept with messages: stored once, shown in the tree and the context, copied by a fork, gone with their
conversation, and never another owner's."""

from __future__ import annotations

import base64

import pytest

from chatbot_contracts import ImagePart
from chatbot_contracts.conversations import NewConversation, TurnRequest
from chatbot_conversation.errors import NotFound
from chatbot_conversation.service import ConversationService, Principal

ALICE = Principal(owner="alice")
BOB = Principal(owner="bob")
GIF = b"GIF89a\x01\x00\x01\x00\x00\x00\x00;"
INLINE = ImagePart(url=f"data:image/gif;base64,{base64.b64encode(GIF).decode()}")
LINKED = ImagePart(url="https://images.example.com/a.png")


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
