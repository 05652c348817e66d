"""The conversation API's messages: what the gateway and the conversation service exchange, and clients see."""

from __future__ import annotations

from typing import Annotated, Literal

import msgspec

from .chat import ChatMessage, ImagePart
from .events import TokenUsage
from .knowledge import Ids, Source
from .registry import ALIAS_MAX_CHARS

MessageStatus = Literal["complete", "streaming", "cancelled", "failed"]
Title = Annotated[str, msgspec.Meta(max_length=300)]
Tag = Annotated[str, msgspec.Meta(min_length=1, max_length=64, pattern=r"^[^\s,][^,]*$")]
Tags = Annotated[list[Tag], msgspec.Meta(max_length=32)]
SystemPrompt = Annotated[str, msgspec.Meta(max_length=100_000)]
Id = Annotated[str, msgspec.Meta(min_length=1, max_length=64)]
ModelName = Annotated[str, msgspec.Meta(max_length=ALIAS_MAX_CHARS)]


class Attachment(msgspec.Struct, kw_only=True):
    """An image shown with a user message."""

    id: str
    media_type: str
    size: int
    """Bytes (0 for an image kept as its URL)."""
    url: str | None = None
    """An `https://` image, shown by its URL; None when its bytes are stored: `GET /api/v1/conversations/{id}/attachments/{attachment id}`."""


class Message(msgspec.Struct, kw_only=True):
    """One node of a conversation's message tree."""

    id: str
    parent_id: str | None
    role: Literal["user", "assistant", "system", "tool"]
    content: str
    status: MessageStatus
    model: str | None = None
    error: str | None = None
    usage: TokenUsage | None = None
    request_id: str | None = None
    created_at: str
    siblings: list[str]
    """Ids of this message and its siblings (same parent), oldest first: `position` of `len(siblings)`."""
    position: int
    """1-based place of this message among its siblings."""
    attachments: list[Attachment] = []
    sources: list[Source] = []
    """An answer grounded in knowledge bases: the passages it was given, numbered as it cites them."""
    unknown_citations: list[int] = []
    """Citation numbers in the answer that name no source (the model made them up): not links."""


class ConversationSummary(msgspec.Struct, kw_only=True):
    id: str
    title: str
    model: str | None
    system_prompt: str | None
    tags: list[str]
    pinned: bool
    archived: bool
    active_leaf_id: str | None
    created_at: str
    updated_at: str
    knowledge_base_ids: list[str] = []
    """The knowledge bases each turn's answer is grounded in."""


class Conversation(ConversationSummary, kw_only=True):
    """A conversation with its whole message tree; `active_path` runs from the root to the active leaf."""

    messages: list[Message]
    active_path: list[str]


class ConversationPage(msgspec.Struct, kw_only=True):
    items: list[ConversationSummary]
    next_cursor: str | None = None


class NewConversation(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    title: Title | None = None
    model: ModelName | None = None
    system_prompt: SystemPrompt | None = None
    tags: Tags = []
    pinned: bool = False
    knowledge_base_ids: Ids = []


class ConversationPatch(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """Only the fields present change; `null` clears `model` and `system_prompt`."""

    title: Title | msgspec.UnsetType = msgspec.UNSET
    tags: Tags | msgspec.UnsetType = msgspec.UNSET
    pinned: bool | msgspec.UnsetType = msgspec.UNSET
    archived: bool | msgspec.UnsetType = msgspec.UNSET
    model: ModelName | msgspec.UnsetType | None = msgspec.UNSET
    system_prompt: SystemPrompt | msgspec.UnsetType | None = msgspec.UNSET
    knowledge_base_ids: Ids | msgspec.UnsetType = msgspec.UNSET


class TurnParams(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    temperature: Annotated[float, msgspec.Meta(ge=0, le=2)] | None = None
    top_p: Annotated[float, msgspec.Meta(ge=0, le=1)] | None = None
    max_tokens: Annotated[int, msgspec.Meta(ge=1)] | None = None
    stop: Annotated[list[str], msgspec.Meta(max_length=4)] | None = None
    seed: int | None = None


class NewImage(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    url: Annotated[str, msgspec.Meta(min_length=1)]
    """A `data:image/<png|jpeg|gif|webp>;base64,` URL (the image itself) or an `https://` URL."""


class NewMessage(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """`POST /api/v1/conversations/{id}/messages`: a user turn.

    Without `parent_id` it continues the active leaf; with one it answers that message (a new
    branch when it is not the active leaf); `parent_id: null` starts a new root (an edit of the
    first question).
    """

    content: Annotated[str, msgspec.Meta(min_length=1)]
    parent_id: Id | msgspec.UnsetType | None = msgspec.UNSET
    model: ModelName | None = None
    params: TurnParams | None = None
    images: Annotated[list[NewImage], msgspec.Meta(max_length=64)] | None = None
    """Images shown with the message, kept with it (the gateway bounds their count and size)."""


class Regenerate(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    model: ModelName | None = None
    params: TurnParams | None = None


class TurnRequest(msgspec.Struct, kw_only=True):
    """Gateway → conversation service: store a turn and assemble its context."""

    request_id: str
    content: str | None = None
    """The user's message; None to regenerate the answer `regenerate_id`."""
    parent_id: str | msgspec.UnsetType | None = msgspec.UNSET
    """Unset: after the active leaf; None: a new root."""
    regenerate_id: str | None = None
    model: str | None = None
    max_tokens: int | None = None
    images: list[ImagePart] | None = None
    """The user's images, checked by the gateway."""
    key_id: str | None = None
    """The key that made the turn: a grounded turn's question is embedded as it (its usage and cost)."""


class Turn(msgspec.Struct, kw_only=True):
    """Conversation service → gateway: the stored messages and the context to generate from."""

    conversation_id: str
    user_message_id: str
    assistant_message_id: str
    model: str
    messages: list[ChatMessage]
    context_tokens: int
    sources: list[Source] = []
    """The passages the answer is grounded in (the conversation names knowledge bases)."""


class ActiveLeaf(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    message_id: Id


class Fork(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    message_id: Id


class Share(msgspec.Struct, kw_only=True):
    token: str
    url: str
    created_at: str


class SharedMessage(msgspec.Struct, kw_only=True):
    role: str
    content: str
    model: str | None = None
    created_at: str
    attachments: list[Attachment] = []
    """Its images: stored ones are read at `GET /api/v1/shared/{token}/attachments/{attachment id}`."""


class SharedConversation(msgspec.Struct, kw_only=True):
    """A read-only snapshot of a conversation's active path; it names no owner."""

    title: str
    messages: list[SharedMessage]
    shared_at: str


class SearchHit(msgspec.Struct, kw_only=True):
    conversation_id: str
    conversation_title: str
    message_id: str | None
    """None when the hit is the conversation's title."""
    role: str | None
    snippet: str
    highlights: list[tuple[int, int]]
    """`[start, end)` character ranges of `snippet` that match the query."""
    on_active_branch: bool
    branch_leaf_id: str | None
    """The leaf to make active to show this message (its newest descendant)."""


class SearchResults(msgspec.Struct, kw_only=True):
    hits: list[SearchHit]


class ExportedMessage(msgspec.Struct, kw_only=True):
    id: Annotated[str, msgspec.Meta(min_length=1, max_length=200)]
    parent_id: Annotated[str, msgspec.Meta(max_length=200)] | None
    role: Literal["user", "assistant", "system", "tool"]
    content: str
    status: MessageStatus = "complete"
    model: ModelName | None = None
    created_at: Annotated[str, msgspec.Meta(max_length=64)] | None = None


class ExportedConversation(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """Our JSON export (and import) format: the whole tree."""

    format: Literal["chatbot-llm/conversation@1"]
    title: Title
    model: ModelName | None = None
    system_prompt: str | None = None
    tags: Tags = []
    active_leaf_id: str | None = None
    created_at: str | None = None
    messages: list[ExportedMessage]
