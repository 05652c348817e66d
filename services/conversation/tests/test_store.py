"""Every conversation operation, on SQLite and on PostgreSQL."""

from __future__ import annotations

import uuid
from pathlib import Path

import msgspec
import pytest
from sqlalchemy import text

from chatbot_contracts import TokenUsage
from chatbot_contracts.conversations import Conversation, ConversationPatch, NewConversation, TurnRequest
from chatbot_conversation import importers
from chatbot_conversation import search as fts
from chatbot_conversation.db.engine import Database
from chatbot_conversation.errors import Invalid, NotFound, TooLarge
from chatbot_conversation.service import ConversationService, Principal

LIMITS = importers.ImportLimits(max_message_chars=5000, max_messages=10_000, time_s=10.0)

FIXTURES = Path(__file__).with_name("fixtures")
ALICE = Principal(owner="alice")
BOB = Principal(owner="bob")


async def say(
    service: ConversationService,
    conversation_id: str,
    content: str,
    answer: str,
    parent_id: str | msgspec.UnsetType | None = msgspec.UNSET,
    model: str | None = None,
) -> tuple[str, str]:
    """A user turn and its completed answer; returns their ids."""
    turn = await service.start_turn(
        ALICE, conversation_id, TurnRequest(request_id=uuid.uuid4().hex, content=content, parent_id=parent_id, model=model)
    )
    await service.finish_answer(
        turn.assistant_message_id,
        status="complete",
        text=answer,
        model=turn.model,
        usage=TokenUsage(input_tokens=5, output_tokens=3, cost_usd=0.001),
        error=None,
    )
    return turn.user_message_id, turn.assistant_message_id


async def test_create_read_patch_and_delete(service: ConversationService) -> None:
    made = await service.create(
        ALICE, NewConversation(title="Trip plans", model="fast", system_prompt="Be brief.", tags=["travel", "2026", "travel"])
    )
    assert (made.title, made.model, made.tags, made.pinned, made.archived) == ("Trip plans", "fast", ["2026", "travel"], False, False)
    patched = await service.patch(ALICE, made.id, ConversationPatch(title="Lisbon", tags=["travel"], pinned=True, system_prompt=None))
    assert (patched.title, patched.tags, patched.pinned, patched.system_prompt) == ("Lisbon", ["travel"], True, None)
    read = await service.get(ALICE, made.id)
    assert read.title == "Lisbon" and read.messages == [] and read.active_path == []
    await service.delete(ALICE, made.id)
    with pytest.raises(NotFound):
        await service.get(ALICE, made.id)


async def test_an_unknown_model_is_refused(service: ConversationService) -> None:
    with pytest.raises(Invalid, match="the model `gpt-9` does not exist"):
        await service.create(ALICE, NewConversation(model="gpt-9"))


async def test_listing_pages_with_a_cursor_and_filters(service: ConversationService) -> None:
    made = [await service.create(ALICE, NewConversation(title=f"Chat {i}", tags=["even"] if i % 2 == 0 else [])) for i in range(7)]
    await service.create(BOB, NewConversation(title="Bob's"))
    await service.patch(ALICE, made[3].id, ConversationPatch(pinned=True))
    await service.patch(ALICE, made[5].id, ConversationPatch(archived=True))
    seen, cursor = [], None
    while True:
        page = await service.list_conversations(ALICE, q=None, tag=None, archived=False, limit=2, cursor=cursor)
        seen += [c.title for c in page.items]
        cursor = page.next_cursor
        if cursor is None:
            break
    assert seen == ["Chat 3", "Chat 6", "Chat 4", "Chat 2", "Chat 1", "Chat 0"], "pinned first, then most recently updated"
    evens = await service.list_conversations(ALICE, q=None, tag="even", archived=False, limit=50, cursor=None)
    assert [c.title for c in evens.items] == ["Chat 6", "Chat 4", "Chat 2", "Chat 0"]
    archived = await service.list_conversations(ALICE, q=None, tag=None, archived=True, limit=50, cursor=None)
    assert [c.title for c in archived.items] == ["Chat 5"]
    assert [
        c.title for c in (await service.list_conversations(ALICE, q="chat 1", tag=None, archived=False, limit=50, cursor=None)).items
    ] == ["Chat 1"]
    with pytest.raises(Invalid):
        await service.list_conversations(ALICE, q=None, tag=None, archived=False, limit=2, cursor="garbage!")


async def test_another_owners_conversation_does_not_exist_for_you(service: ConversationService) -> None:
    made = await service.create(ALICE, NewConversation(title="Private"))
    _, a1 = await say(service, made.id, "secret question", "secret answer")
    for attempt in (
        service.get(BOB, made.id),
        service.patch(BOB, made.id, ConversationPatch(title="mine")),
        service.delete(BOB, made.id),
        service.start_turn(BOB, made.id, TurnRequest(request_id="x", content="hi")),
        service.set_active_leaf(BOB, made.id, a1),
        service.fork(BOB, made.id, a1),
        service.share(BOB, made.id),
        service.export(BOB, made.id),
    ):
        with pytest.raises(NotFound, match=f"no conversation {made.id}"):
            await attempt
    assert (await service.search(BOB, "secret", 10)).hits == []
    assert (await service.list_conversations(BOB, q=None, tag=None, archived=False, limit=10, cursor=None)).items == []


async def test_edit_regenerate_switch_and_fork_build_the_exact_tree(service: ConversationService) -> None:
    made = await service.create(ALICE, NewConversation(model="fast"))
    u1, a1 = await say(service, made.id, "What is Redis?", "An in-memory store.")
    u2, a2 = await say(service, made.id, "And streams?", "Append-only logs.")
    # Editing u2 is a new user message on u2's parent: a sibling.
    u2b, a2b = await say(service, made.id, "And pub/sub?", "Fire and forget.", parent_id=a1)
    tree = await service.get(ALICE, made.id)
    by_id = {m.id: m for m in tree.messages}
    assert tree.title == "What is Redis?", "the first question titles the conversation"
    assert tree.active_path == [u1, a1, u2b, a2b]
    assert (by_id[u2].siblings, by_id[u2].position, by_id[u2b].position) == ([u2, u2b], 1, 2)
    assert [(m.id, m.parent_id, m.role) for m in tree.messages] == [
        (u1, None, "user"), (a1, u1, "assistant"), (u2, a1, "user"), (a2, u2, "assistant"), (u2b, a1, "user"), (a2b, u2b, "assistant"),
    ]  # fmt: skip
    # Regenerating the last answer makes an assistant sibling, which becomes the active leaf.
    regenerated = await service.start_turn(ALICE, made.id, TurnRequest(request_id="r-regen", regenerate_id=a2b))
    assert regenerated.user_message_id == u2b
    assert [m.content for m in regenerated.messages] == ["What is Redis?", "An in-memory store.", "And pub/sub?"]
    tree = await service.get(ALICE, made.id)
    a2c = regenerated.assistant_message_id
    assert tree.active_path == [u1, a1, u2b, a2c] and {m.id: m for m in tree.messages}[a2c].status == "streaming"
    assert {m.id: m for m in tree.messages}[a2c].siblings == [a2b, a2c]
    # Switching back to the first branch persists on the server.
    switched = await service.set_active_leaf(ALICE, made.id, a2)
    assert switched.active_path == [u1, a1, u2, a2]
    assert (await service.get(ALICE, made.id)).active_path == [u1, a1, u2, a2]
    # Forking copies the path into a new conversation.
    fork = await service.fork(ALICE, made.id, a1)
    copied = await service.get(ALICE, fork.id)
    assert [(m.role, m.content) for m in copied.messages] == [("user", "What is Redis?"), ("assistant", "An in-memory store.")]
    assert copied.active_path == [m.id for m in copied.messages] and fork.title.endswith("(fork)")


async def test_bad_turns_are_refused_and_write_nothing(service: ConversationService) -> None:
    first = await service.create(ALICE, NewConversation())
    second = await service.create(ALICE, NewConversation())
    _, foreign = await say(service, second.id, "elsewhere", "there")
    with pytest.raises(Invalid, match=f"parent_id {foreign} is not a message of this conversation"):
        await service.start_turn(ALICE, first.id, TurnRequest(request_id="x", content="hi", parent_id=foreign))
    with pytest.raises(TooLarge, match="at most 5000 are allowed"):
        await service.start_turn(ALICE, first.id, TurnRequest(request_id="x", content="x" * 5001))
    with pytest.raises(Invalid, match="the model `nope` does not exist"):
        await service.start_turn(ALICE, first.id, TurnRequest(request_id="x", content="hi", model="nope"))
    assert (await service.get(ALICE, first.id)).messages == [], "a refused turn leaves nothing behind"


async def test_context_is_the_path_trimmed_to_the_model_window(service: ConversationService) -> None:
    made = await service.create(ALICE, NewConversation(system_prompt="Be brief.", model="tiny"))
    for i in range(4):
        await say(service, made.id, f"question {i} " + "x" * 60, f"answer {i} " + "y" * 60)
    turn = await service.start_turn(ALICE, made.id, TurnRequest(request_id="r", content="last question"))
    # tiny: 100-token window minus a 40-token answer budget leaves 60 for the context.
    assert turn.messages[0].content == "Be brief." and turn.messages[-1].content == "last question"
    assert turn.messages[1].role == "user" and len(turn.messages) < 10
    assert turn.context_tokens <= 60


async def test_answers_are_written_once_and_never_regress(service: ConversationService) -> None:
    made = await service.create(ALICE, NewConversation())
    turn = await service.start_turn(ALICE, made.id, TurnRequest(request_id="r", content="hi"))
    usage = TokenUsage(input_tokens=3, output_tokens=2, cost_usd=0.5)
    assert (
        await service.finish_answer(turn.assistant_message_id, status="complete", text="Hello!", model="fast", usage=usage, error=None)
        == made.id
    )
    # A redelivered event, then a late failure of an earlier attempt: neither changes the stored answer.
    assert (
        await service.finish_answer(turn.assistant_message_id, status="complete", text="Hello!", model="fast", usage=usage, error=None)
        is None
    )
    assert await service.finish_answer(turn.assistant_message_id, status="failed", text="", model="fast", usage=None, error="late") is None
    answer = (await service.get(ALICE, made.id)).messages[-1]
    assert (answer.status, answer.content, answer.usage, answer.error) == (
        "complete",
        "Hello!",
        TokenUsage(input_tokens=3, output_tokens=2, cost_usd=0.5),
        None,
    )
    cancelled = await service.start_turn(ALICE, made.id, TurnRequest(request_id="r2", content="and?"))
    await service.finish_answer(cancelled.assistant_message_id, status="cancelled", text="Partial", model="fast", usage=None, error=None)
    last = (await service.get(ALICE, made.id)).messages[-1]
    assert (last.status, last.content) == ("cancelled", "Partial")


async def test_search_ranks_marks_and_finds_side_branches(service: ConversationService) -> None:
    made = await service.create(ALICE, NewConversation(title="Kubernetes autoscaling notes"))
    u1, a1 = await say(service, made.id, "How does KEDA scale workers?", "KEDA reads the Redis stream lag and scales the deployment.")
    _, side_answer = await say(service, made.id, "What about HPA?", "HPA scales on CPU; KEDA scales on queue lag.", parent_id=a1)
    await service.set_active_leaf(ALICE, made.id, a1)
    other = await service.create(ALICE, NewConversation(title="Cooking"))
    await say(service, other.id, "How long to boil an egg?", "About nine minutes.")
    await service.create(BOB, NewConversation(title="Bob also asks about KEDA"))

    hits = (await service.search(ALICE, "keda", 10)).hits
    assert {h.conversation_id for h in hits} == {made.id}
    by_message = {h.message_id: h for h in hits}
    assert set(by_message) == {u1, a1, side_answer}
    side = by_message[side_answer]
    assert not side.on_active_branch and side.branch_leaf_id == side_answer
    assert by_message[a1].on_active_branch
    first = by_message[u1]
    assert [first.snippet[s:e] for s, e in first.highlights] == ["KEDA"]
    assert first.conversation_title == "Kubernetes autoscaling notes"
    # Every word must match; the last may be a prefix (search as you type).
    assert [h.message_id for h in (await service.search(ALICE, "stream la", 10)).hits] == [a1]
    titles = (await service.search(ALICE, "autoscal", 10)).hits
    assert titles[0].message_id is None and titles[0].conversation_id == made.id
    assert (await service.search(ALICE, "   ", 10)).hits == []


async def test_sqlite_search_starts_from_the_full_text_index(tmp_path: Path) -> None:
    """Started from the owner's conversations instead, a search probed the index once per conversation (16 ms, not 0.6, at 100k)."""
    database = Database(f"sqlite:///{tmp_path}/plan.db")
    await database.migrate()
    try:
        async with database.read() as session:
            plan = (
                await session.execute(
                    text("EXPLAIN QUERY PLAN " + fts.statement("sqlite", by_owner=True)), {"q": "x", "owner": "o", "limit": 5}
                )
            ).all()
    finally:
        await database.close()
    steps = [row[-1] for row in plan if row[-1].startswith(("SCAN", "SEARCH"))]
    assert steps[0].startswith("SCAN titles_fts") and not any("ix_conversations_owner" in step for step in steps), steps


async def test_share_snapshot_revoke_and_reshare(service: ConversationService) -> None:
    made = await service.create(ALICE, NewConversation(title="Shareable"))
    await say(service, made.id, "Q1", "A1")
    share = await service.share(ALICE, made.id)
    assert share.url == f"https://chat.example/shared/{share.token}" and len(share.token) >= 32
    await say(service, made.id, "Q2 after sharing", "A2")
    snapshot = await service.shared(share.token)
    assert snapshot.title == "Shareable" and [(m.role, m.content) for m in snapshot.messages] == [("user", "Q1"), ("assistant", "A1")]
    assert "alice" not in msgspec.json.encode(snapshot).decode()
    again = await service.share(ALICE, made.id)
    assert again.token != share.token
    with pytest.raises(NotFound):
        await service.shared(share.token)
    await service.revoke_share(ALICE, made.id)
    with pytest.raises(NotFound):
        await service.shared(again.token)
    with pytest.raises(NotFound):
        await service.revoke_share(ALICE, made.id)


async def test_export_then_import_gives_the_same_tree(service: ConversationService) -> None:
    made = await service.create(ALICE, NewConversation(title="Round trip", model="fast", system_prompt="Be brief.", tags=["a"]))
    await service_tree(service, made.id)
    exported = await service.export(ALICE, made.id)
    [imported] = await service.store_import(BOB, importers.parse(msgspec.json.encode(exported), LIMITS))
    original, copy = await service.get(ALICE, made.id), await service.get(BOB, imported.id)
    assert (copy.title, copy.model, copy.system_prompt, copy.tags) == ("Round trip", "fast", "Be brief.", ["a"])
    assert shape(copy) == shape(original)
    assert [m.content for m in copy.messages if m.id in copy.active_path] == [
        m.content for m in original.messages if m.id in original.active_path
    ]
    markdown = await service.export_markdown(ALICE, made.id)
    assert markdown.startswith("# Round trip\n") and "**User**\n\nQ2b" in markdown and "Q2a" not in markdown


def shape(conversation: Conversation) -> list[tuple[str, str, str | None]]:
    """Each message's role and content with its parent's content: the tree, independent of ids."""
    contents = {m.id: m.content for m in conversation.messages}
    return [(m.role, m.content, contents[m.parent_id] if m.parent_id else None) for m in conversation.messages]


async def service_tree(service: ConversationService, conversation_id: str) -> tuple[str, str]:
    u1, a1 = await say(service, conversation_id, "Q1", "A1")
    await say(service, conversation_id, "Q2a", "A2a")
    await say(service, conversation_id, "Q2b", "A2b", parent_id=a1)
    return u1, a1


async def test_a_chatgpt_export_imports_with_its_branches(service: ConversationService) -> None:
    raw = (FIXTURES / "chatgpt_conversations.json").read_bytes()
    imported = await service.store_import(ALICE, importers.parse(raw, LIMITS))
    assert [c.title for c in imported] == ["Sourdough troubleshooting", "Regex help"]
    bread = await service.get(ALICE, imported[0].id)
    contents = {m.id: m.content for m in bread.messages}
    assert [contents[i] for i in bread.active_path] == [
        "My sourdough is dense. Why?",
        "Usually under-fermentation. How warm is your kitchen?",
        "About 18°C, and I proof for 4 hours.",
        "At 18°C give it 8–10 hours, or proof somewhere warmer.",
    ]
    # The edited question is a sibling branch; the hidden system node and the image part are not messages.
    edited = next(m for m in bread.messages if m.content.startswith("About 18°C"))
    assert len(edited.siblings) == 2
    assert all(m.role in ("user", "assistant") for m in bread.messages) and len(bread.messages) == 6
    assert bread.created_at.startswith("2025-03-")


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        (b"{not json", "the file is not JSON"),
        (b"[]", "the file holds no conversation"),
        (b'[{"title": "x"}]', "missing or empty - at `$[0].mapping`"),
        (
            b'[{"mapping": {"a": {"id": "a", "parent": null, "children": ["ghost"], "message": null}}}]',
            "a child names a node that does not exist - at `$[0].mapping.ghost`",
        ),
        (
            b'[{"mapping": {"a": {"parent": null, "children": [], "message": {"author": {"role": "wizard"}, "content": {"parts": ["hi"]}}}}}]',
            "unknown role 'wizard' - at `$[0].mapping.a.message.author.role`",
        ),
        (
            b'{"format": "chatbot-llm/conversation@1", "title": "t", "messages": [{"id": "1", "parent_id": "9", "role": "user", "content": "x"}]}',
            "its parent 9 is not in the conversation - at `$.messages[0].parent_id`",
        ),
        (
            b'{"format": "chatbot-llm/conversation@1", "title": "t", "messages": [{"id": "1", "role": "robot", "content": "x"}]}',
            "at `$.messages[0].role`",
        ),
    ],
)
async def test_a_malformed_import_names_the_first_bad_path_and_stores_nothing(
    service: ConversationService, payload: bytes, message: str
) -> None:
    with pytest.raises(Invalid) as caught:
        await service.store_import(ALICE, importers.parse(payload, LIMITS))
    assert message in caught.value.message
    assert (await service.list_conversations(ALICE, q=None, tag=None, archived=False, limit=10, cursor=None)).items == []


async def test_a_turn_without_a_model_uses_the_configured_default(service: ConversationService) -> None:
    service.default_model = "tiny"
    made = await service.create(ALICE, NewConversation())
    assert (await service.start_turn(ALICE, made.id, TurnRequest(request_id=uuid.uuid4().hex, content="hi"))).model == "tiny"
    chosen = await service.create(ALICE, NewConversation(model="fast"))
    assert (await service.start_turn(ALICE, chosen.id, TurnRequest(request_id=uuid.uuid4().hex, content="hi"))).model == "fast"
