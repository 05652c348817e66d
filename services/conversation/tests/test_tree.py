"""Context trimming and branch helpers, on plain values."""

from __future__ import annotations

from dataclasses import dataclass

from chatbot_conversation.tree import children_of, estimate_tokens, newest_leaf, path_to, trim_to_budget


@dataclass
class N:
    id: str
    parent_id: str | None
    seq: int


def test_paths_children_and_branch_leaves() -> None:
    nodes = [N("u1", None, 1), N("a1", "u1", 2), N("u2", "a1", 3), N("u2b", "a1", 5), N("a2", "u2", 4), N("a2b", "u2b", 6)]
    by_id = {n.id: n for n in nodes}
    assert [n.id for n in path_to(by_id, "a2")] == ["u1", "a1", "u2", "a2"]
    children = children_of(nodes)
    assert [n.id for n in children["a1"]] == ["u2", "u2b"]
    assert newest_leaf(children, "u1") == "a2b"
    assert newest_leaf(children, "u2") == "a2"


def test_trimming_drops_the_oldest_turns_first_and_keeps_system_and_newest() -> None:
    turns = [("user", "a" * 40), ("assistant", "b" * 40), ("user", "c" * 40), ("assistant", "d" * 40), ("user", "e" * 40)]
    per_turn = estimate_tokens("x" * 40)
    system_cost = estimate_tokens("Be brief.")
    everything, used = trim_to_budget("Be brief.", turns, system_cost + 5 * per_turn)
    assert len(everything) == 6 and used == system_cost + 5 * per_turn
    # One token short: the oldest turn goes, and then the assistant turn it answered (never open on the assistant).
    trimmed, used = trim_to_budget("Be brief.", turns, system_cost + 5 * per_turn - 1)
    assert [c[0] for _, c in trimmed] == ["B", "c", "d", "e"] and used == system_cost + 3 * per_turn
    # Even a budget too small for anything keeps the system prompt and the newest user turn.
    minimal, _ = trim_to_budget("Be brief.", turns, 1)
    assert minimal == [("system", "Be brief."), ("user", "e" * 40)]
