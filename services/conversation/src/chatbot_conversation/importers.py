"""Reading conversations from files: our own JSON export, and ChatGPT's `conversations.json`."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import msgspec

from chatbot_contracts.conversations import ExportedConversation, ExportedMessage

from .errors import Invalid

_ours = msgspec.json.Decoder(ExportedConversation)
_ROLES = {"user", "assistant", "system", "tool"}


def parse(raw: bytes) -> list[ExportedConversation]:
    """Every conversation in the file; the first problem raises `Invalid` naming its path."""
    try:
        data = msgspec.json.decode(raw)
    except msgspec.DecodeError as exc:
        raise Invalid(f"the file is not JSON: {exc}") from exc
    if isinstance(data, dict) and "format" in data:
        try:
            conversation = _ours.decode(raw)
        except msgspec.ValidationError as exc:
            raise Invalid(f"not a valid chatbot-llm export: {exc}") from exc
        _check_tree(conversation, "$")
        return [conversation]
    items = data if isinstance(data, list) else [data]
    if not items:
        raise Invalid("the file holds no conversation")
    return [_chatgpt(item, f"$[{index}]" if isinstance(data, list) else "$") for index, item in enumerate(items)]


def _check_tree(conversation: ExportedConversation, where: str) -> None:
    ids = {m.id for m in conversation.messages}
    for index, message in enumerate(conversation.messages):
        if message.parent_id is not None and message.parent_id not in ids:
            raise Invalid(f"{where}.messages[{index}].parent_id: no message {message.parent_id} in this conversation")


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
        return datetime.fromtimestamp(value, UTC).isoformat().replace("+00:00", "Z")
    return None


def _chatgpt(item: Any, path: str) -> ExportedConversation:
    if not isinstance(item, dict):
        raise _fail(path, f"expected an object, got {type(item).__name__}")
    mapping = item.get("mapping")
    if not isinstance(mapping, dict) or not mapping:
        raise _fail(f"{path}.mapping", "missing or empty")
    kept: dict[str, ExportedMessage] = {}
    # Walk from the roots so that every kept node's nearest kept ancestor is known when it is reached.
    roots = [key for key, node in mapping.items() if isinstance(node, dict) and not node.get("parent")]
    if not roots:
        raise _fail(f"{path}.mapping", "no root node (every node has a parent)")
    stack: list[tuple[str, str | None]] = [(root, None) for root in reversed(roots)]
    seen: set[str] = set()
    while stack:
        key, kept_parent = stack.pop()
        if key in seen:
            raise _fail(f"{path}.mapping.{key}", "the node is reached twice (the mapping is not a tree)")
        seen.add(key)
        node = mapping.get(key)
        if not isinstance(node, dict):
            raise _fail(f"{path}.mapping.{key}", "a child names a node that does not exist")
        message = node.get("message")
        here = kept_parent
        if isinstance(message, dict):
            author = message.get("author")
            role = author.get("role") if isinstance(author, dict) else None
            if role not in _ROLES:
                raise _fail(f"{path}.mapping.{key}.message.author.role", f"unknown role {role!r}")
            text = _text(message.get("content"))
            hidden = (message.get("metadata") or {}).get("is_visually_hidden_from_conversation")
            if text is not None and text.strip() and not hidden and role != "tool":
                kept[key] = ExportedMessage(
                    id=key, parent_id=kept_parent, role=role, content=text, created_at=_time(message.get("create_time"))
                )
                here = key
        elif message is not None:
            raise _fail(f"{path}.mapping.{key}.message", "expected an object or null")
        children = node.get("children") or []
        if not isinstance(children, list):
            raise _fail(f"{path}.mapping.{key}.children", "expected a list")
        stack.extend((child, here) for child in reversed(children))
    current = item.get("current_node")
    leaf = current if current in kept else None
    if leaf is None and isinstance(current, str):
        # The current node may be a hidden one: show its nearest kept ancestor.
        while isinstance(current, str) and current not in kept:
            node = mapping.get(current)
            current = node.get("parent") if isinstance(node, dict) else None
        leaf = current if isinstance(current, str) else None
    title = item.get("title")
    return ExportedConversation(
        format="chatbot-llm/conversation@1",
        title=title if isinstance(title, str) and title else "Imported from ChatGPT",
        active_leaf_id=leaf,
        created_at=_time(item.get("create_time")),
        messages=list(kept.values()),
    )
