"""Conversation operations, each one transaction: nothing is ever half-written."""

from __future__ import annotations

import asyncio
import base64
import secrets
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import msgspec
from sqlalchemy import delete, func, insert, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from chatbot_contracts import IMAGE_TOKENS, ChatMessage, ModelSpec, Registry, TokenUsage
from chatbot_contracts.conversations import (
    Attachment,
    Conversation,
    ConversationPage,
    ConversationPatch,
    ConversationSummary,
    ExportedConversation,
    ExportedMessage,
    Message,
    NewConversation,
    SearchHit,
    SearchResults,
    Share,
    SharedConversation,
    SharedMessage,
    Turn,
    TurnRequest,
)
from chatbot_contracts.knowledge import Grounding, Source

from . import search as fts
from .attachments import Attachments, BlobStore
from .cache import TreeCache
from .citations import unknown_citations
from .db.engine import Database
from .db.schema import AttachmentRow, ConversationKnowledgeRow, ConversationRow, KnowledgeBaseRow, MessageRow, ShareRow, TagRow
from .errors import Invalid, NotFound, TooLarge
from .live import FinishedStreams
from .tree import TreeProblem, check_forest, children_of, newest_leaf, path_to, trim_to_budget

TITLE_WORDS = 8
MESSAGE_COLUMNS = [
    MessageRow.id,
    MessageRow.parent_id,
    MessageRow.role,
    MessageRow.content,
    MessageRow.status,
    MessageRow.model,
    MessageRow.error,
    MessageRow.input_tokens,
    MessageRow.output_tokens,
    MessageRow.cost_usd,
    MessageRow.request_id,
    MessageRow.created_at,
    MessageRow.seq,
    MessageRow.conversation_id,
    MessageRow.sources,
]
"""What a tree is read with, in the order `_tree` unpacks it."""
_snapshot_encoder = msgspec.json.Encoder()
_snapshot_decoder = msgspec.json.Decoder(SharedConversation)
_cursor_decoder = msgspec.json.Decoder(tuple[bool, str, str])
_conversation_decoder = msgspec.json.Decoder(Conversation)
_sources_decoder = msgspec.json.Decoder(list[Source])


IMPORT_CHUNK = 500
"""Imported messages written per statement."""


def now() -> datetime:
    return datetime.now(UTC)


def new_id() -> str:
    return uuid.uuid4().hex


def iso(moment: datetime) -> str:
    if moment.tzinfo is None:  # SQLite hands back naive datetimes; they were stored as UTC
        return moment.isoformat() + "Z"
    return moment.isoformat().replace("+00:00", "Z")


def first_words(text: str, limit: int = TITLE_WORDS) -> str:
    """A provisional title: the first words of the question."""
    words = text.split()
    title = " ".join(words[:limit])
    return (title + "…" if len(words) > limit else title)[:120] or "New conversation"


class Principal(msgspec.Struct, frozen=True):
    """Whose data an operation may touch; an admin's reaches everyone's."""

    owner: str
    is_admin: bool = False


class ConversationService:
    def __init__(
        self,
        db: Database,
        registry: Registry,
        cache: TreeCache,
        *,
        max_message_chars: int,
        share_base_url: str,
        default_model: str | None = None,
        live: FinishedStreams | None = None,
        attachments: BlobStore | None = None,
        max_context_images: int = 16,
        max_context_image_bytes: int = 8_000_000,
    ) -> None:
        if default_model is not None and default_model not in registry:
            raise ValueError(f"CHATBOT_DEFAULT_MODEL `{default_model}` is not in the model registry")
        if not registry.models:
            raise ValueError(f"the model registry {registry.source} names no model")
        self.default_model = default_model or next(iter(registry.models))
        self.db = db
        self.registry = registry
        self.cache = cache
        self.max_message_chars = max_message_chars
        self.share_base_url = share_base_url.rstrip("/")
        self.live = live
        """Shows answers whose stream has ended as ended, before their event is stored (read-your-writes)."""
        self.attachments = Attachments(attachments) if attachments is not None else None
        self.max_context_images = max_context_images
        """The newest images of a turn's context that are shown to the model again (older ones are left out)..."""
        self.max_context_image_bytes = max_context_image_bytes
        """...as long as their stored bytes add up to no more than this (a request carries them inline)."""

    # --- conversations ---------------------------------------------------------------------------

    async def create(self, who: Principal, new: NewConversation) -> ConversationSummary:
        self._check_model(new.model)
        moment = now()
        row = ConversationRow(
            id=new_id(),
            owner=who.owner,
            title=new.title or "New conversation",
            title_is_auto=new.title is None,
            model=new.model,
            system_prompt=new.system_prompt,
            pinned=new.pinned,
            archived=False,
            created_at=moment,
            updated_at=moment,
        )
        async with self.db.write() as session:
            bases = await self._own_knowledge_bases(session, who, new.knowledge_base_ids)
            session.add(row)
            session.add_all(TagRow(conversation_id=row.id, tag=tag) for tag in dict.fromkeys(new.tags))
            await session.flush()
            session.add_all(ConversationKnowledgeRow(conversation_id=row.id, knowledge_base_id=base) for base in bases)
        return self._summary(row, sorted(set(new.tags)), bases)

    async def list_conversations(
        self, who: Principal, *, q: str | None, tag: str | None, archived: bool, limit: int, cursor: str | None
    ) -> ConversationPage:
        statement = select(ConversationRow).where(ConversationRow.archived == archived)
        if not who.is_admin:
            statement = statement.where(ConversationRow.owner == who.owner)
        if tag:
            statement = statement.where(ConversationRow.id.in_(select(TagRow.conversation_id).where(TagRow.tag == tag)))
        if q:
            statement = statement.where(func.lower(ConversationRow.title).contains(q.lower(), autoescape=True))
        if cursor:
            pinned, updated_at, last_id = self._decode_cursor(cursor)
            moment = datetime.fromisoformat(updated_at.replace("Z", "+00:00"))
            later = (ConversationRow.updated_at < moment) | ((ConversationRow.updated_at == moment) & (ConversationRow.id < last_id))
            if pinned:
                statement = statement.where(ConversationRow.pinned.is_(False) | (ConversationRow.pinned.is_(True) & later))
            else:
                statement = statement.where(ConversationRow.pinned.is_(False) & later)
        statement = statement.order_by(ConversationRow.pinned.desc(), ConversationRow.updated_at.desc(), ConversationRow.id.desc()).limit(
            limit + 1
        )
        async with self.db.read() as session:
            rows = list((await session.scalars(statement)).all())
            tags = await self._tags(session, [row.id for row in rows[:limit]])
            bases = await self._knowledge(session, [row.id for row in rows[:limit]])
        next_cursor = None
        if len(rows) > limit:
            last = rows[limit - 1]
            next_cursor = base64.urlsafe_b64encode(_snapshot_encoder.encode((last.pinned, iso(last.updated_at), last.id))).decode()
        return ConversationPage(
            items=[self._summary(row, tags.get(row.id, []), bases.get(row.id, [])) for row in rows[:limit]], next_cursor=next_cursor
        )

    async def get(self, who: Principal, conversation_id: str) -> Conversation:
        conversation = await self._stored(who, conversation_id)
        return await self.live.overlay(conversation) if self.live is not None else conversation

    async def _stored(self, who: Principal, conversation_id: str) -> Conversation:
        owner, body, version = await self.cache.load(conversation_id)
        if body is not None and (owner == who.owner or who.is_admin):
            decoded: Conversation = _conversation_decoder.decode(body)
            return decoded
        async with self.db.read() as session:
            row = await self._owned(session, who, conversation_id)
            messages = await self._messages(session, conversation_id)
            tags = (await self._tags(session, [conversation_id])).get(conversation_id, [])
            bases = (await self._knowledge(session, [conversation_id])).get(conversation_id, [])
            shown = Attachments.described(await Attachments.rows(session, conversation_id))
        children = children_of(messages, ordered=True)
        by_id = {m.id: m for m in messages}
        active = [m.id for m in path_to(by_id, row.active_leaf_id)]
        conversation = Conversation(
            **msgspec.structs.asdict(self._summary(row, tags, bases)), messages=self._tree(messages, children, shown), active_path=active
        )
        if self.cache.enabled:
            await self.cache.store(conversation_id, row.owner, _snapshot_encoder.encode(conversation), version)
        return conversation

    async def patch(self, who: Principal, conversation_id: str, change: ConversationPatch) -> ConversationSummary:
        if isinstance(change.model, str):
            self._check_model(change.model)
        async with self.db.write() as session:
            row = await self._owned(session, who, conversation_id)
            if not isinstance(change.title, msgspec.UnsetType):
                row.title, row.title_is_auto = change.title, False
            for field in ("pinned", "archived", "model", "system_prompt"):
                value = getattr(change, field)
                if not isinstance(value, msgspec.UnsetType):
                    setattr(row, field, value)
            if not isinstance(change.tags, msgspec.UnsetType):
                await session.execute(delete(TagRow).where(TagRow.conversation_id == conversation_id))
                session.add_all(TagRow(conversation_id=conversation_id, tag=tag) for tag in dict.fromkeys(change.tags))
            if not isinstance(change.knowledge_base_ids, msgspec.UnsetType):
                bases = await self._own_knowledge_bases(session, who, change.knowledge_base_ids)
                await session.execute(delete(ConversationKnowledgeRow).where(ConversationKnowledgeRow.conversation_id == conversation_id))
                session.add_all(ConversationKnowledgeRow(conversation_id=conversation_id, knowledge_base_id=base) for base in bases)
            row.updated_at = now()
            await session.flush()
            tags = (await self._tags(session, [conversation_id])).get(conversation_id, [])
            bases = (await self._knowledge(session, [conversation_id])).get(conversation_id, [])
        await self.cache.forget(conversation_id)
        return self._summary(row, tags, bases)

    async def delete(self, who: Principal, conversation_id: str) -> None:
        async with self.db.write() as session:
            await self._owned(session, who, conversation_id)
            await session.execute(delete(AttachmentRow).where(AttachmentRow.conversation_id == conversation_id))
            await session.execute(delete(MessageRow).where(MessageRow.conversation_id == conversation_id))
            await session.execute(delete(ConversationRow).where(ConversationRow.id == conversation_id))
        await self.cache.forget(conversation_id)
        if self.attachments is not None:
            await self.attachments.store.drop(conversation_id)

    # --- turns and branches ----------------------------------------------------------------------

    async def grounding_for(self, who: Principal, conversation_id: str, turn: TurnRequest) -> tuple[list[str], str, int] | None:
        """What a turn of a conversation that names knowledge bases asks of them: their ids, the question, and the tokens
        its sources may take (half of what the model's window leaves at most); None for a conversation that names none."""
        async with self.db.read() as session:
            row = await self._owned(session, who, conversation_id)
            bases = (await self._knowledge(session, [conversation_id])).get(conversation_id, [])
            if not bases:
                return None
            question = turn.content
            if turn.regenerate_id is not None:
                answer = await session.get(MessageRow, turn.regenerate_id)
                user = await session.get(MessageRow, answer.parent_id) if answer is not None and answer.parent_id else None
                question = user.content if user is not None and user.conversation_id == conversation_id else None
        if not question:
            return None
        spec = self._check_model(turn.model or row.model or self.default_model)
        room = spec.context_window - min(turn.max_tokens or spec.max_output_tokens, spec.max_output_tokens)
        return bases, question, max(room // 2, 0)

    async def start_turn(self, who: Principal, conversation_id: str, turn: TurnRequest, grounding: Grounding | None = None) -> Turn:
        """Store the user's message (or find the one whose answer is regenerated) and an empty answer; return the context
        (with `grounding`'s sources before the conversation, and kept with the answer)."""
        if turn.content is not None and len(turn.content) > self.max_message_chars:
            raise TooLarge(f"the message has {len(turn.content)} characters; at most {self.max_message_chars} are allowed")
        if turn.images and self.attachments is None:
            raise Invalid("this conversation service keeps no images (it has no attachment store)")
        moment = now()
        async with self.db.write() as session:
            row = await self._owned(session, who, conversation_id)
            messages = await self._messages(session, conversation_id)
            by_id = {m.id: m for m in messages}
            seq = max((m.seq for m in messages), default=0) + 1
            if turn.regenerate_id is not None:
                answer = by_id.get(turn.regenerate_id)
                if answer is None or answer.role != "assistant" or answer.parent_id is None:
                    raise NotFound(f"no assistant message {turn.regenerate_id} in this conversation")
                user = by_id[answer.parent_id]
            else:
                parent_id = row.active_leaf_id if isinstance(turn.parent_id, msgspec.UnsetType) else turn.parent_id
                if parent_id is not None and parent_id not in by_id:
                    raise Invalid(f"parent_id {parent_id} is not a message of this conversation")
                user = MessageRow(
                    id=new_id(),
                    conversation_id=conversation_id,
                    parent_id=parent_id,
                    role="user",
                    content=turn.content or "",
                    status="complete",
                    created_at=moment,
                    seq=seq,
                )
                seq += 1
                session.add(user)
                by_id[user.id] = user
                if turn.images and self.attachments is not None:
                    await self.attachments.keep(session, conversation_id, user.id, turn.images, moment)
                if row.title_is_auto and not messages:
                    row.title = first_words(user.content)
            model = turn.model or row.model or self.default_model
            spec = self._check_model(model)
            answer = MessageRow(
                id=new_id(),
                conversation_id=conversation_id,
                parent_id=user.id,
                role="assistant",
                content="",
                status="streaming",
                model=model,
                request_id=turn.request_id,
                sources=_snapshot_encoder.encode(grounding.sources).decode() if grounding else None,
                created_at=moment,
                seq=seq,
            )
            session.add(answer)
            row.active_leaf_id = answer.id
            row.updated_at = moment
            path = [m for m in path_to(by_id, user.id) if m.status != "failed"]
            await session.flush()
            images = await Attachments.rows(session, conversation_id, [m.id for m in path if m.role == "user"])
        await self.cache.forget(conversation_id)
        shown = self._images_shown(path, images)
        budget = spec.context_window - min(turn.max_tokens or spec.max_output_tokens, spec.max_output_tokens)
        costs = [len(shown.get(m.id, ())) * IMAGE_TOKENS for m in path]
        system = row.system_prompt
        if grounding is not None:
            system = f"{system}\n\n{grounding.prompt}" if system else grounding.prompt
        kept, tokens = trim_to_budget(system, [(m.role, m.content) for m in path], budget, costs)
        turns = [ChatMessage(role=role, content=content) for role, content in kept]  # type: ignore[arg-type]
        return Turn(
            conversation_id=conversation_id,
            user_message_id=user.id,
            assistant_message_id=answer.id,
            model=model,
            messages=await self._with_images(turns, path, shown),
            context_tokens=tokens,
            sources=grounding.sources if grounding else [],
        )

    def _images_shown(self, path: list[Any], images: dict[str, list[AttachmentRow]]) -> dict[str, list[AttachmentRow]]:
        """The images the model is shown again, by message: the newest of the path's, at most `max_context_images` and
        `max_context_image_bytes` (the newest turn's own images always)."""
        count, size = self.max_context_images, self.max_context_image_bytes
        shown: dict[str, list[AttachmentRow]] = {}
        for position, message in enumerate(reversed(path)):
            kept = []
            for row in reversed(images.get(message.id, [])):
                if position > 0 and (count <= 0 or size < row.size):
                    break
                kept.append(row)
                count, size = count - 1, size - row.size
            if kept:
                shown[message.id] = kept[::-1]
        return shown

    async def _with_images(self, turns: list[ChatMessage], path: list[Any], shown: dict[str, list[AttachmentRow]]) -> list[ChatMessage]:
        """The context's user turns with their images (`turns` ends with the last of `path`)."""
        if self.attachments is None or not shown:
            return turns
        out = list(turns)
        for index, message in zip(range(len(out) - 1, -1, -1), reversed(path), strict=False):
            if out[index].role == "user" and (rows := shown.get(message.id)):
                out[index] = msgspec.structs.replace(out[index], images=await self.attachments.parts(rows) or None)
        return out

    async def attachment(self, who: Principal, conversation_id: str, attachment_id: str) -> tuple[str, bytes]:
        """A stored image of one of the owner's conversations: its media type and bytes."""
        async with self.db.read() as session:
            await self._owned(session, who, conversation_id)
            found = await self.attachments.read(session, conversation_id, attachment_id) if self.attachments is not None else None
        if found is None:
            raise NotFound(f"no attachment {attachment_id} in this conversation")
        return found

    async def abandon(self, who: Principal, conversation_id: str, message_id: str, reason: str) -> None:
        """Mark an answer whose request was refused as failed (only while it is still `streaming`)."""
        async with self.db.write() as session:
            await self._owned(session, who, conversation_id)
            await session.execute(
                update(MessageRow)
                .where(MessageRow.id == message_id, MessageRow.conversation_id == conversation_id, MessageRow.status == "streaming")
                .values(status="failed", error=reason)
            )
        await self.cache.forget(conversation_id)

    async def set_active_leaf(self, who: Principal, conversation_id: str, message_id: str) -> Conversation:
        async with self.db.write() as session:
            row = await self._owned(session, who, conversation_id)
            found = await session.scalar(
                select(MessageRow.id).where(MessageRow.id == message_id, MessageRow.conversation_id == conversation_id)
            )
            if found is None:
                raise Invalid(f"message {message_id} is not in this conversation")
            row.active_leaf_id = message_id
            row.updated_at = now()
        await self.cache.forget(conversation_id)
        return await self.get(who, conversation_id)

    async def fork(self, who: Principal, conversation_id: str, message_id: str) -> ConversationSummary:
        """A new conversation holding a copy of the path from the root to `message_id`."""
        moment = now()
        async with self.db.write() as session:
            row = await self._owned(session, who, conversation_id)
            messages = await self._messages(session, conversation_id)
            by_id = {m.id: m for m in messages}
            if message_id not in by_id:
                raise Invalid(f"message {message_id} is not in this conversation")
            fork = ConversationRow(
                id=new_id(),
                owner=row.owner,
                title=f"{row.title} (fork)",
                title_is_auto=False,
                model=row.model,
                system_prompt=row.system_prompt,
                pinned=False,
                archived=False,
                created_at=moment,
                updated_at=moment,
            )
            session.add(fork)
            await session.flush()
            parent: str | None = None
            copies: dict[str, str] = {}
            for seq, original in enumerate(path_to(by_id, message_id), start=1):
                copy = MessageRow(
                    id=new_id(),
                    conversation_id=fork.id,
                    parent_id=parent,
                    role=original.role,
                    content=original.content,
                    status=original.status,
                    model=original.model,
                    error=original.error,
                    input_tokens=original.input_tokens,
                    output_tokens=original.output_tokens,
                    cost_usd=original.cost_usd,
                    sources=original.sources,
                    created_at=original.created_at,
                    seq=seq,
                )
                session.add(copy)
                parent = copies[original.id] = copy.id
            await session.flush()
            if self.attachments is not None:
                await self.attachments.copy(session, conversation_id, fork.id, copies, moment)
            fork.active_leaf_id = parent
            tags = (await self._tags(session, [conversation_id])).get(conversation_id, [])
            session.add_all(TagRow(conversation_id=fork.id, tag=tag) for tag in tags)
            bases = (await self._knowledge(session, [conversation_id])).get(conversation_id, [])
            session.add_all(ConversationKnowledgeRow(conversation_id=fork.id, knowledge_base_id=base) for base in bases)
        return self._summary(fork, tags, bases)

    # --- sharing ---------------------------------------------------------------------------------

    async def share(self, who: Principal, conversation_id: str) -> Share:
        """A read-only snapshot of the active path behind an unguessable token (the same one while it is not revoked)."""
        conversation = await self.get(who, conversation_id)
        async with self.db.write() as session:
            existing = await session.scalar(
                select(ShareRow).where(ShareRow.conversation_id == conversation_id, ShareRow.revoked_at.is_(None))
            )
            if existing is not None:
                await session.execute(update(ShareRow).where(ShareRow.token == existing.token).values(revoked_at=now()))
            by_id = {m.id: m for m in conversation.messages}
            snapshot = SharedConversation(
                title=conversation.title,
                messages=[
                    SharedMessage(
                        role=by_id[i].role,
                        content=by_id[i].content,
                        model=by_id[i].model,
                        created_at=by_id[i].created_at,
                        attachments=by_id[i].attachments,
                    )
                    for i in conversation.active_path
                ],
                shared_at=iso(now()),
            )
            row = ShareRow(
                token=secrets.token_urlsafe(24),
                conversation_id=conversation_id,
                snapshot=_snapshot_encoder.encode(snapshot).decode(),
                created_at=now(),
            )
            session.add(row)
        return Share(token=row.token, url=f"{self.share_base_url}/shared/{row.token}", created_at=iso(row.created_at))

    async def revoke_share(self, who: Principal, conversation_id: str) -> None:
        async with self.db.write() as session:
            await self._owned(session, who, conversation_id)
            result = await session.execute(
                update(ShareRow).where(ShareRow.conversation_id == conversation_id, ShareRow.revoked_at.is_(None)).values(revoked_at=now())
            )
            if not result.rowcount:  # type: ignore[attr-defined]
                raise NotFound("this conversation is not shared")

    async def shared(self, token: str) -> SharedConversation:
        async with self.db.read() as session:
            row = await session.scalar(select(ShareRow).where(ShareRow.token == token, ShareRow.revoked_at.is_(None)))
        if row is None:
            raise NotFound("no such shared conversation (the link may have been revoked)")
        return _snapshot_decoder.decode(row.snapshot)

    async def shared_attachment(self, token: str, attachment_id: str) -> tuple[str, bytes]:
        """A stored image of a shared snapshot (only one its messages show; nothing else of the conversation)."""
        async with self.db.read() as session:
            row = await session.scalar(select(ShareRow).where(ShareRow.token == token, ShareRow.revoked_at.is_(None)))
            snapshot = _snapshot_decoder.decode(row.snapshot) if row is not None else None
            shown = snapshot is not None and any(a.id == attachment_id for m in snapshot.messages for a in m.attachments)
            found = None
            if row is not None and shown and self.attachments is not None:
                found = await self.attachments.read(session, row.conversation_id, attachment_id)
        if found is None:
            raise NotFound(f"no attachment {attachment_id} in this shared conversation")
        return found

    # --- search ----------------------------------------------------------------------------------

    async def search(self, who: Principal, query: str, limit: int) -> SearchResults:
        async with self.db.read() as session:
            matches = await fts.find(session, self.db.dialect, None if who.is_admin else who.owner, query, limit)
            trees = await self._branches(session, {m.conversation_id for m in matches if m.message_id})
        hits = []
        for match in matches:
            shown, marks = fts.snippet(match.body, query)
            on_active, leaf = True, None
            if match.message_id is not None:
                children, active = trees[match.conversation_id]
                on_active = match.message_id in active
                leaf = newest_leaf(children, match.message_id)
            hits.append(
                SearchHit(
                    conversation_id=match.conversation_id,
                    conversation_title=match.title,
                    message_id=match.message_id,
                    role=match.role,
                    snippet=shown,
                    highlights=marks,
                    on_active_branch=on_active,
                    branch_leaf_id=leaf,
                )
            )
        return SearchResults(hits=hits)

    # --- export and import -----------------------------------------------------------------------

    async def export(self, who: Principal, conversation_id: str) -> ExportedConversation:
        conversation = await self.get(who, conversation_id)
        return ExportedConversation(
            format="chatbot-llm/conversation@1",
            title=conversation.title,
            model=conversation.model,
            system_prompt=conversation.system_prompt,
            tags=conversation.tags,
            active_leaf_id=conversation.active_leaf_id,
            created_at=conversation.created_at,
            messages=[
                ExportedMessage(
                    id=m.id, parent_id=m.parent_id, role=m.role, content=m.content, status=m.status, model=m.model, created_at=m.created_at
                )
                for m in conversation.messages
            ],
        )

    async def export_markdown(self, who: Principal, conversation_id: str) -> str:
        conversation = await self.get(who, conversation_id)
        by_id = {m.id: m for m in conversation.messages}
        parts = [f"# {conversation.title}\n"]
        if conversation.system_prompt:
            parts.append(f"> System: {conversation.system_prompt}\n")
        for message_id in conversation.active_path:
            message = by_id[message_id]
            who_said = "User" if message.role == "user" else f"Assistant ({message.model})" if message.model else message.role.title()
            parts.append(f"**{who_said}**\n\n{message.content}\n")
        return "\n".join(parts)

    async def store_import(self, who: Principal, conversations: Sequence[ExportedConversation]) -> list[ConversationSummary]:
        """Store parsed conversations, all in one transaction (a bad one stores none); no stored tree can hold a cycle."""
        for index, imported in enumerate(conversations):
            try:
                check_forest({m.id: m.parent_id for m in imported.messages})
            except TreeProblem as problem:
                raise Invalid(f"{problem.problem} - at conversation {index}, message {problem.node_id}") from None
        out = []
        async with self.db.write() as session:
            for imported in conversations:
                moment = now()
                row = ConversationRow(
                    id=new_id(),
                    owner=who.owner,
                    title=imported.title or "Imported conversation",
                    title_is_auto=False,
                    model=imported.model,
                    system_prompt=imported.system_prompt,
                    pinned=False,
                    archived=False,
                    created_at=_parse_time(imported.created_at) or moment,
                    updated_at=moment,
                )
                session.add(row)
                await session.flush()
                ids = {m.id: new_id() for m in imported.messages}
                rows = [
                    {
                        "id": ids[message.id],
                        "conversation_id": row.id,
                        "parent_id": ids.get(message.parent_id) if message.parent_id else None,
                        "role": message.role,
                        "content": message.content,
                        "status": message.status if message.status != "streaming" else "cancelled",
                        "model": message.model,
                        "created_at": _parse_time(message.created_at) or moment,
                        "seq": seq,
                    }
                    for seq, message in enumerate(imported.messages, start=1)
                ]
                # Many rows at once (an executemany per chunk, not an ORM object each), and the event loop
                # is free between chunks: a large import does not hold up other tenants' requests.
                for start in range(0, len(rows), IMPORT_CHUNK):
                    await session.execute(insert(MessageRow), rows[start : start + IMPORT_CHUNK])
                    await asyncio.sleep(0)
                row.active_leaf_id = ids.get(imported.active_leaf_id or "") or (
                    ids[imported.messages[-1].id] if imported.messages else None
                )
                session.add_all(TagRow(conversation_id=row.id, tag=tag) for tag in dict.fromkeys(imported.tags))
                out.append(self._summary(row, sorted(set(imported.tags))))
        return out

    # --- inference events ------------------------------------------------------------------------

    async def finish_answer(
        self, message_id: str, *, status: str, text: str, model: str, usage: TokenUsage | None, error: str | None
    ) -> str | None:
        """Write an answer's final state once; later or repeated events never change or regress it. Returns its conversation."""
        values: dict[str, object] = {"status": status, "content": text, "model": model, "error": error}
        if usage is not None:
            values |= {"input_tokens": usage.input_tokens, "output_tokens": usage.output_tokens, "cost_usd": usage.cost_usd}
        async with self.db.write() as session:
            conversation_id = await session.scalar(
                update(MessageRow)
                .where(MessageRow.id == message_id, MessageRow.status == "streaming")
                .values(**values)
                .returning(MessageRow.conversation_id)
            )
            if conversation_id is not None:
                await session.execute(update(ConversationRow).where(ConversationRow.id == conversation_id).values(updated_at=now()))
        if conversation_id is not None:
            await self.cache.forget(conversation_id)
        return conversation_id

    async def set_generated_title(self, conversation_id: str, title: str) -> None:
        """A model-written title, unless the user has named the conversation meanwhile."""
        title = title.strip().splitlines()[0].strip(" \"'#*") if title.strip() else ""
        if not title:
            return
        async with self.db.write() as session:
            await session.execute(
                update(ConversationRow)
                .where(ConversationRow.id == conversation_id, ConversationRow.title_is_auto.is_(True))
                .values(title=title[:120])
            )
        await self.cache.forget(conversation_id)

    async def first_exchange(self, conversation_id: str) -> tuple[str, str, str] | None:
        """`(owner, question, answer)` when the conversation has exactly one answered exchange and an automatic title."""
        async with self.db.read() as session:
            row = await session.get(ConversationRow, conversation_id)
            if row is None or not row.title_is_auto:
                return None
            messages = await self._messages(session, conversation_id)
        if len(messages) != 2 or messages[1].status != "complete":
            return None
        return row.owner, messages[0].content, messages[1].content

    # --- helpers ---------------------------------------------------------------------------------

    def _check_model(self, model: str | None) -> ModelSpec:
        if model is None:
            return next(iter(self.registry.models.values()))
        spec = self.registry.get(model)
        if spec is None:
            raise Invalid(f"the model `{model}` does not exist; GET /v1/models lists the available ones")
        return spec

    async def _owned(self, session: AsyncSession, who: Principal, conversation_id: str) -> ConversationRow:
        row = await session.get(ConversationRow, conversation_id)
        if row is None or (row.owner != who.owner and not who.is_admin):
            raise NotFound(f"no conversation {conversation_id}")
        return row

    async def _messages(self, session: AsyncSession, conversation_id: str) -> list[MessageRow]:
        """The conversation's messages as plain rows (read-only; no ORM identity map to build for a long tree)."""
        statement = select(*MESSAGE_COLUMNS).where(MessageRow.conversation_id == conversation_id).order_by(MessageRow.seq, MessageRow.id)
        return list((await session.execute(statement)).all())  # type: ignore[arg-type]

    async def _branches(self, session: AsyncSession, ids: set[str]) -> dict[str, tuple[dict[str | None, list[Any]], set[str]]]:
        """For each conversation: its children map and the ids on its active path (two queries for them all)."""
        if not ids:
            return {}
        leaves = dict(
            (await session.execute(select(ConversationRow.id, ConversationRow.active_leaf_id).where(ConversationRow.id.in_(ids)))).all()
        )
        shape = select(MessageRow.conversation_id, MessageRow.id, MessageRow.parent_id, MessageRow.seq).where(
            MessageRow.conversation_id.in_(ids)
        )
        nodes: dict[str, list[Any]] = {}
        for node in (await session.execute(shape)).all():
            nodes.setdefault(node.conversation_id, []).append(node)
        out = {}
        for conversation_id, members in nodes.items():
            active = {n.id for n in path_to({n.id: n for n in members}, leaves.get(conversation_id))}
            out[conversation_id] = (children_of(members), active)
        return out

    @staticmethod
    async def _knowledge(session: AsyncSession, ids: list[str]) -> dict[str, list[str]]:
        """The knowledge bases of each of these conversations."""
        if not ids:
            return {}
        found: dict[str, list[str]] = {}
        statement = select(ConversationKnowledgeRow.conversation_id, ConversationKnowledgeRow.knowledge_base_id).where(
            ConversationKnowledgeRow.conversation_id.in_(ids)
        )
        for conversation_id, base in (await session.execute(statement)).all():
            found.setdefault(conversation_id, []).append(base)
        return {k: sorted(v) for k, v in found.items()}

    @staticmethod
    async def _own_knowledge_bases(session: AsyncSession, who: Principal, ids: list[str]) -> list[str]:
        """`ids` without repeats, each a knowledge base of `who` (422 naming the first that is not)."""
        unique = list(dict.fromkeys(ids))
        if not unique:
            return []
        statement = select(KnowledgeBaseRow.id).where(KnowledgeBaseRow.id.in_(unique), KnowledgeBaseRow.owner == who.owner)
        found = set((await session.scalars(statement)).all())
        for index, base in enumerate(unique):
            if base not in found:
                raise Invalid(f"no knowledge base {base} (at $.knowledge_base_ids[{index}])")
        return unique

    async def _tags(self, session: AsyncSession, ids: list[str]) -> dict[str, list[str]]:
        if not ids:
            return {}
        tags: dict[str, list[str]] = {}
        for conversation_id, tag in (
            await session.execute(select(TagRow.conversation_id, TagRow.tag).where(TagRow.conversation_id.in_(ids)))
        ).all():
            tags.setdefault(conversation_id, []).append(tag)
        return {k: sorted(v) for k, v in tags.items()}

    @staticmethod
    def _summary(row: ConversationRow, tags: list[str], knowledge_base_ids: list[str] | None = None) -> ConversationSummary:
        return ConversationSummary(
            knowledge_base_ids=knowledge_base_ids or [],
            id=row.id,
            title=row.title,
            model=row.model,
            system_prompt=row.system_prompt,
            tags=tags,
            pinned=row.pinned,
            archived=row.archived,
            active_leaf_id=row.active_leaf_id,
            created_at=iso(row.created_at),
            updated_at=iso(row.updated_at),
        )

    @staticmethod
    def _tree(
        rows: list[Any], children: dict[str | None, list[MessageRow]], shown: dict[str, list[Attachment]] | None = None
    ) -> list[Message]:
        """The messages in creation order (`rows` come ordered by `seq`, `id`), each with its siblings' ids.

        Siblings share one list of ids (read-only), made once per parent.
        """
        siblings = {parent: [m.id for m in kids] for parent, kids in children.items()}
        positions = {m.id: index for kids in children.values() for index, m in enumerate(kids, start=1)}
        messages = []
        for (
            id_,
            parent_id,
            role,
            content,
            status,
            model,
            error,
            input_tokens,
            output_tokens,
            cost_usd,
            request_id,
            created_at,
            *rest,
        ) in rows:
            sources = _sources_decoder.decode(rest[2]) if len(rest) > 2 and rest[2] else []
            ids = siblings[parent_id]
            usage = None
            if input_tokens is not None or output_tokens is not None:
                usage = TokenUsage(input_tokens=input_tokens or 0, output_tokens=output_tokens or 0, cost_usd=cost_usd or 0.0)
            messages.append(
                Message(
                    id=id_,
                    parent_id=parent_id,
                    role=role,
                    content=content,
                    status=status,
                    model=model,
                    error=error,
                    usage=usage,
                    request_id=request_id,
                    created_at=iso(created_at),
                    siblings=ids,
                    position=positions[id_],
                    attachments=(shown or {}).get(id_, []),
                    sources=sources,
                    unknown_citations=unknown_citations(content, len(sources)) if sources else [],
                )
            )
        return messages

    @staticmethod
    def _decode_cursor(cursor: str) -> tuple[bool, str, str]:
        try:
            return _cursor_decoder.decode(base64.urlsafe_b64decode(cursor.encode()))
        except (ValueError, msgspec.MsgspecError) as exc:
            raise Invalid("the cursor is not one this service handed out") from exc


def _parse_time(value: str | None) -> datetime | None:
    if not value:
        return None
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)
