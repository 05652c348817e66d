"""Trees from outside (imports) and trees as stored: every walk ends, on any parent links whatever."""

from __future__ import annotations

from dataclasses import dataclass

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from chatbot_contracts.conversations import NewConversation
from chatbot_conversation import importers
from chatbot_conversation.api import decode
from chatbot_conversation.errors import Invalid, Malformed, TooLarge
from chatbot_conversation.tree import TreeProblem, check_forest, children_of, newest_leaf, path_to

LIMITS = importers.ImportLimits(max_message_chars=1000, max_messages=500, time_s=10.0)

ids = st.sampled_from([f"n{i}" for i in range(12)])
parent_links = st.dictionaries(ids, st.one_of(st.none(), ids, st.just("missing")), min_size=1, max_size=12)
"""Any parent links over a few ids: roots, self-parents, cycles, dangling parents and forests alike."""


@dataclass
class N:
    id: str
    parent_id: str | None
    seq: int


def _is_forest(parents: dict[str, str | None]) -> bool:
    for start in parents:
        node: str | None = start
        for _ in range(len(parents) + 1):
            if node is None:
                break
            if node not in parents:
                return False
            node = parents[node]
        else:
            return False
    return True


@settings(max_examples=300, deadline=None)
@given(parent_links)
def test_every_tree_function_ends_on_any_parent_links(parents: dict[str, str | None]) -> None:
    nodes = [N(node_id, parent, seq) for seq, (node_id, parent) in enumerate(parents.items())]
    by_id = {n.id: n for n in nodes}
    children = children_of(nodes)
    for node in nodes:
        assert len(path_to(by_id, node.id)) <= len(nodes)
        assert newest_leaf(children, node.id) in by_id
    if _is_forest(parents):
        check_forest(parents)
    else:
        with pytest.raises(TreeProblem) as problem:
            check_forest(parents)
        assert problem.value.node_id in parents


def _chatgpt(parents: dict[str, str | None], current: str) -> bytes:
    children: dict[str, list[str]] = {key: [] for key in parents}
    for key, parent in parents.items():
        if parent in children:
            children[parent].append(key)
    mapping = {
        key: {
            "id": key,
            "parent": parent,
            "children": children[key],
            "message": {"author": {"role": "user"}, "content": {"parts": [f"text of {key}"]}},
        }
        for key, parent in parents.items()
    }
    return msgspec.json.encode([{"title": "t", "current_node": current, "mapping": mapping}])


@settings(max_examples=300, deadline=None)
@given(parent_links, ids)
def test_the_chatgpt_importer_ends_and_refuses_what_is_not_a_tree(parents: dict[str, str | None], current: str) -> None:
    raw = _chatgpt(parents, current)
    if _is_forest(parents):
        [conversation] = importers.parse(raw, LIMITS)
        check_forest({m.id: m.parent_id for m in conversation.messages})
    else:
        with pytest.raises(Invalid, match=r"at `\$\[0\]\.mapping"):
            importers.parse(raw, LIMITS)


@settings(max_examples=300, deadline=None)
@given(parent_links)
def test_our_importer_refuses_cycles_and_dangling_parents(parents: dict[str, str | None]) -> None:
    messages = [{"id": key, "parent_id": parent, "role": "user", "content": "x"} for key, parent in parents.items()]
    raw = msgspec.json.encode({"format": "chatbot-llm/conversation@1", "title": "t", "messages": messages})
    if _is_forest(parents):
        importers.parse(raw, LIMITS)
    else:
        with pytest.raises(Invalid, match="parent_id`"):
            importers.parse(raw, LIMITS)


def test_a_current_node_on_a_parent_cycle_is_refused_with_its_path() -> None:
    raw = msgspec.json.encode(
        {
            "title": "loop",
            "current_node": "a",
            "mapping": {
                "a": {"parent": "b", "children": ["b"], "message": None},
                "b": {"parent": "a", "children": ["a"], "message": None},
            },
        }
    )
    with pytest.raises(Invalid, match=r"its parents form a cycle - at `\$\.mapping\.[ab]\.parent`"):
        importers.parse(raw, LIMITS)


def test_a_message_that_is_its_own_parent_is_refused() -> None:
    raw = msgspec.json.encode(
        {"format": "chatbot-llm/conversation@1", "title": "t", "messages": [{"id": "m", "parent_id": "m", "role": "user", "content": "x"}]}
    )
    with pytest.raises(Invalid, match=r"its own parent - at `\$\.messages\[0\]\.parent_id`"):
        importers.parse(raw, LIMITS)


def test_duplicate_ids_are_refused() -> None:
    message = {"id": "m", "parent_id": None, "role": "user", "content": "x"}
    raw = msgspec.json.encode({"format": "chatbot-llm/conversation@1", "title": "t", "messages": [message, message]})
    with pytest.raises(Invalid, match=r"used twice - at `\$\.messages\[1\]\.id`"):
        importers.parse(raw, LIMITS)


def test_imported_messages_obey_the_api_limits() -> None:
    long = {"id": "m", "parent_id": None, "role": "user", "content": "x" * 1001}
    with pytest.raises(TooLarge, match=r"at most 1000 are allowed - at `\$\.messages\[0\]\.content`"):
        importers.parse(msgspec.json.encode({"format": "chatbot-llm/conversation@1", "title": "t", "messages": [long]}), LIMITS)
    many = [{"id": f"m{i}", "parent_id": None, "role": "user", "content": "x"} for i in range(501)]
    with pytest.raises(TooLarge, match="more than 500 messages"):
        importers.parse(msgspec.json.encode({"format": "chatbot-llm/conversation@1", "title": "t", "messages": many}), LIMITS)


def test_deep_nesting_is_a_clear_refusal() -> None:
    with pytest.raises(Malformed, match="nested too deeply"):
        importers.parse(b"[" * 100_000 + b"]" * 100_000, LIMITS)


def test_a_body_or_file_that_is_not_utf8_is_refused_saying_where() -> None:
    """msgspec refuses such bytes with a `UnicodeDecodeError`, not one of its own errors: it must not pass as a fault."""
    with pytest.raises(Invalid, match="the file is not JSON: byte 0xff at offset 12 is not UTF-8"):
        importers.parse(b'[{"title": "\xff"}]', LIMITS)
    with pytest.raises(Invalid, match="not valid JSON: byte 0xe9 at offset 14 is not UTF-8"):
        decode(b'{"title": "caf\xe9"}', NewConversation)


def test_times_no_calendar_holds_are_left_out() -> None:
    raw = b'[{"title": "t", "create_time": 1e20, "mapping": {"a": {"parent": null, "children": [], "message": {"author": {"role": "user"}, "content": {"parts": ["hi"]}, "create_time": -1e20}}}}]'
    [conversation] = importers.parse(raw, LIMITS)
    assert conversation.created_at is None and conversation.messages[0].created_at is None
