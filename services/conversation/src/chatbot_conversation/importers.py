"""Reading conversations from files: our own JSON export, and ChatGPT's `conversations.json`."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Any

import msgspec

from chatbot_contracts.codec import not_utf8
from chatbot_contracts.conversations import ExportedConversation, ExportedMessage

from .errors import Invalid, Malformed, TooLarge
from .tree import TreeProblem, check_forest

_ours = msgspec.json.Decoder(ExportedConversation)
_ROLES = {"user", "assistant", "system", "tool"}
TITLE_CHARS = 300
"""A title's bound in our own format; a longer ChatGPT title is cut to it."""


class ImportLimits(msgspec.Struct, frozen=True, kw_only=True):
    """What one import may hold and take: the same per-message bound as messages sent through the API."""

    max_message_chars: int
    max_messages: int
    """Messages (ChatGPT: nodes) over the whole file."""
    time_s: float
    """CPU time the parse may take before it is refused."""


class _Budget:
    """Counts nodes against the file's bound and checks the time budget now and then (every node would cost too much)."""

    def __init__(self, limits: ImportLimits) -> None:
        self.limits = limits
        self.nodes = 0
        self.deadline = time.monotonic() + limits.time_s

    def tick(self, path: str) -> None:
        self.nodes += 1
        if self.nodes > self.limits.max_messages:
            raise TooLarge(f"the import holds more than {self.limits.max_messages} messages (CHATBOT_MAX_IMPORT_MESSAGES) - at `{path}`")
        if self.nodes % 512 == 0 and time.monotonic() > self.deadline:
            raise TooLarge(f"the import took longer than {self.limits.time_s:g}s to read - at `{path}`")

    def content(self, text: str, path: str) -> None:
        if len(text) > self.limits.max_message_chars:
            raise TooLarge(f"a message has {len(text)} characters; at most {self.limits.max_message_chars} are allowed - at `{path}`")


def parse(raw: bytes, limits: ImportLimits) -> list[ExportedConversation]:
    """Every conversation in the file; the first problem raises `Invalid` (or `TooLarge`) naming its path.

    CPU-bound and linear in the file: the caller runs it on a worker thread, never on the event loop.
    """
    try:
        data = msgspec.json.decode(raw)
    except msgspec.DecodeError as exc:
        raise Invalid(f"the file is not JSON: {exc}") from exc
    except UnicodeDecodeError as exc:
        raise Invalid(f"the file is not JSON: {not_utf8(raw)}") from exc
    except RecursionError as exc:
        raise Malformed("the file's JSON is nested too deeply") from exc
    budget = _Budget(limits)
    if isinstance(data, dict) and "format" in data:
        try:
            conversation = _ours.decode(raw)
        except msgspec.ValidationError as exc:
            raise Invalid(f"not a valid chatbot-llm export: {exc}") from exc
        _check_ours(conversation, "$", budget)
        return [conversation]
    items = data if isinstance(data, list) else [data]
    if not items:
        raise Invalid("the file holds no conversation")
    return [_chatgpt(item, f"$[{index}]" if isinstance(data, list) else "$", budget) for index, item in enumerate(items)]


def _check_ours(conversation: ExportedConversation, where: str, budget: _Budget) -> None:
    """Our own export: unique ids, parents that exist, no cycle, messages within the API's limits."""
    parents: dict[str, str | None] = {}
    index_of: dict[str, int] = {}
    for index, message in enumerate(conversation.messages):
        path = f"{where}.messages[{index}]"
        budget.tick(path)
        budget.content(message.content, f"{path}.content")
        if message.id in parents:
            raise Invalid(f"not a valid chatbot-llm export: the id {message.id!r} is used twice - at `{path}.id`")
        parents[message.id] = message.parent_id
        index_of[message.id] = index
    try:
        check_forest(parents)
    except TreeProblem as problem:
        raise Invalid(
            f"not a valid chatbot-llm export: {problem.problem} - at `{where}.messages[{index_of[problem.node_id]}].parent_id`"
        ) from None
    if conversation.system_prompt is not None:
        budget.content(conversation.system_prompt, f"{where}.system_prompt")


def _fail(path: str, problem: str) -> Invalid:
    return Invalid(f"not a ChatGPT export: {problem} - at `{path}`")


def _text(content: Any) -> str | None:
    """The text of a ChatGPT message content; None for content that has none (images, tool payloads)."""
    if not isinstance(content, dict):
        return None
    parts = content.get("parts")
    if isinstance(parts, list):
        texts = [p for p in parts if isinstance(p, str)]
        return "\n".join(texts) if texts else None
    text = content.get("text")
    return text if isinstance(text, str) else None


def _time(value: Any) -> str | None:
    if isinstance(value, int | float):
        try:
            return datetime.fromtimestamp(value, UTC).isoformat().replace("+00:00", "Z")
        except (OverflowError, ValueError, OSError):
            return None  # a time no calendar holds (inf, nan, year 10000) is left out, as a missing one is
    return None


def _chatgpt(item: Any, path: str, budget: _Budget) -> ExportedConversation:
    if not isinstance(item, dict):
        raise _fail(path, f"expected an object, got {type(item).__name__}")
    mapping = item.get("mapping")
    if not isinstance(mapping, dict) or not mapping:
        raise _fail(f"{path}.mapping", "missing or empty")
    # The parent links decide the tree: each must name a node, and following them must end at a root.
    parents: dict[str, str | None] = {}
    for key, node in mapping.items():
        budget.tick(f"{path}.mapping.{key}")
        parent = node.get("parent") if isinstance(node, dict) else None
        if parent is not None and not isinstance(parent, str):
            raise _fail(f"{path}.mapping.{key}.parent", "expected a node id or null")
        parents[key] = parent or None
    try:
        check_forest(parents)
    except TreeProblem as problem:
        raise _fail(f"{path}.mapping.{problem.node_id}.parent", problem.problem) from None
    kept: dict[str, ExportedMessage] = {}
    # Walk from the roots so that every kept node's nearest kept ancestor is known when it is reached.
    roots = [key for key, parent in parents.items() if parent is None]
    stack: list[tuple[str, str | None, str | None]] = [(root, None, None) for root in reversed(roots)]
    """(node, its nearest kept ancestor, the node that listed it as a child)."""
    seen: set[str] = set()
    while stack:
        key, kept_parent, listed_by = stack.pop()
        where = f"{path}.mapping.{key}"
        if key in seen:
            raise _fail(where, "the node is reached twice (the mapping is not a tree)")
        seen.add(key)
        node = mapping.get(key)
        if not isinstance(node, dict):
            raise _fail(where, "a child names a node that does not exist")
        if parents[key] != listed_by:
            raise _fail(f"{where}.parent", f"the node is a child of {listed_by} but names {parents[key]} as its parent")
        message = node.get("message")
        here = kept_parent
        if isinstance(message, dict):
            author = message.get("author")
            role = author.get("role") if isinstance(author, dict) else None
            if role not in _ROLES:
                raise _fail(f"{where}.message.author.role", f"unknown role {role!r}")
            text = _text(message.get("content"))
            metadata = message.get("metadata")
            hidden = metadata.get("is_visually_hidden_from_conversation") if isinstance(metadata, dict) else None
            if text is not None and text.strip() and not hidden and role != "tool":
                budget.content(text, f"{where}.message.content")
                kept[key] = ExportedMessage(
                    id=key, parent_id=kept_parent, role=role, content=text, created_at=_time(message.get("create_time"))
                )
                here = key
        elif message is not None:
            raise _fail(f"{where}.message", "expected an object or null")
        children = node.get("children") or []
        if not isinstance(children, list) or not all(isinstance(child, str) for child in children):
            raise _fail(f"{where}.children", "expected a list of node ids")
        stack.extend((child, here, key) for child in reversed(children))
    # A node no child list names is still part of the tree its parent link puts it in.
    if len(seen) < len(parents):
        missing = next(key for key in parents if key not in seen)
        raise _fail(f"{path}.mapping.{missing}", f"the node names {parents[missing]} as its parent, which does not list it as a child")
    current = item.get("current_node")
    leaf = current if isinstance(current, str) and current in kept else None
    if leaf is None and isinstance(current, str):
        # The current node may be a hidden one: show its nearest kept ancestor (the links end at a root: checked above).
        node_id: str | None = current
        while node_id is not None and node_id not in kept:
            node_id = parents.get(node_id)
        leaf = node_id
    title = item.get("title")
    return ExportedConversation(
        format="chatbot-llm/conversation@1",
        title=title[:TITLE_CHARS] if isinstance(title, str) and title else "Imported from ChatGPT",
        active_leaf_id=leaf,
        created_at=_time(item.get("create_time")),
        messages=list(kept.values()),
    )
