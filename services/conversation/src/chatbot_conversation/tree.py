"""The message tree: paths, siblings, branches and context trimming, as pure functions."""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable, Sequence
from typing import Protocol, TypeVar


class Node(Protocol):
    @property
    def id(self) -> str: ...
    @property
    def parent_id(self) -> str | None: ...
    @property
    def seq(self) -> int: ...


N = TypeVar("N", bound=Node)


def children_of(nodes: Iterable[N], *, ordered: bool = False) -> dict[str | None, list[N]]:
    """Each parent id (None for roots) to its children, oldest first (`ordered`: `nodes` already come by `seq`, `id`)."""
    children: dict[str | None, list[N]] = defaultdict(list)
    for node in nodes if ordered else sorted(nodes, key=lambda n: (n.seq, n.id)):
        children[node.parent_id].append(node)
    return children


def path_to(by_id: dict[str, N], node_id: str | None) -> list[N]:
    """The nodes from the root down to `node_id` (empty for None)."""
    path: list[N] = []
    seen: set[str] = set()
    while node_id is not None and node_id in by_id and node_id not in seen:
        seen.add(node_id)
        node = by_id[node_id]
        path.append(node)
        node_id = node.parent_id
    path.reverse()
    return path


def newest_leaf(children: dict[str | None, list[N]], node_id: str) -> str:
    """The leaf reached from `node_id` by always taking the newest child: the branch that message is on.

    Stops at a node already passed, so even a damaged tree (a cycle) cannot hold it forever.
    """
    seen: set[str] = set()
    while children.get(node_id) and node_id not in seen:
        seen.add(node_id)
        node_id = children[node_id][-1].id
    return node_id


class TreeProblem(ValueError):
    """A set of parent links that is not a forest; `node_id` is where it shows."""

    def __init__(self, node_id: str, problem: str) -> None:
        super().__init__(problem)
        self.node_id = node_id
        self.problem = problem


def check_forest(parents: dict[str, str | None]) -> None:
    """Raise `TreeProblem` unless every parent named exists and following parents always ends at a root.

    Linear in the number of nodes: each node is walked once (an explicit stack, no recursion).
    """
    state: dict[str, int] = {}
    """1: on the walk being followed now; 2: known to reach a root."""
    for start in parents:
        if start in state:
            continue
        walk: list[str] = []
        node: str | None = start
        while node is not None and node not in state:
            if node not in parents:
                raise TreeProblem(walk[-1], f"its parent {node} is not in the conversation")
            state[node] = 1
            walk.append(node)
            node = parents[node]
        if node is not None and state[node] == 1:
            problem = "the message is its own parent" if parents[node] == node else "its parents form a cycle"
            raise TreeProblem(node, problem)
        for passed in walk:
            state[passed] = 2


def estimate_tokens(text: str) -> int:
    """About four characters a token, plus a few for the message's framing."""
    return math.ceil(len(text) / 4) + 4


def trim_to_budget(
    system: str | None, turns: Sequence[tuple[str, str]], budget: int, extra: Sequence[int] | None = None
) -> tuple[list[tuple[str, str]], int]:
    """The turns that fit `budget` tokens after the system prompt: the oldest go first; the newest turn always stays.
    `extra`: tokens each turn costs beyond its text (its images).

    Returns the kept `(role, content)` pairs (system prompt first, if any) and their token count.
    """
    fixed = estimate_tokens(system) if system else 0
    costs = [estimate_tokens(content) + (extra[i] if extra else 0) for i, (_, content) in enumerate(turns)]
    kept: list[tuple[str, str]] = []
    used = fixed
    for index, (role, content) in enumerate(reversed(turns)):
        cost = costs[len(turns) - 1 - index]
        if index > 0 and used + cost > budget:
            break
        kept.append((role, content))
        used += cost
    kept.reverse()
    # A conversation must not open with the assistant's half of a dropped exchange.
    while len(kept) > 1 and kept[0][0] != "user":
        kept.pop(0)
        used -= costs[len(turns) - len(kept) - 1]
    return ([("system", system)] if system else []) + kept, used
