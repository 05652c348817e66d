"""Code that ships uses third-party packages through their public API only: no underscore names or internal
modules imported, no private attribute of theirs read, nothing of theirs assigned to.

An upgrade of a library may rename anything private without notice; the platform must not break silently
when it does. The walk is over the syntax trees of `libs/*/src` and `services/*/src`. It cannot see a public
method swapped on an instance it does not know to be a library's (the code review has to). A private name is one
with a leading underscore (dunders excepted) that the file using it does not define itself.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

ROOT = Path(__file__).parents[1]
SOURCES = sorted([*ROOT.glob("libs/*/src/**/*.py"), *ROOT.glob("services/*/src/**/*.py")])

ALLOWED: dict[tuple[str, str], str] = {
    # (file relative to the root, the offending name) -> why it has to be there. None has to be today.
}


def _defined(tree: ast.Module) -> set[str]:
    """The underscore names a file defines itself: functions, classes, names, parameters, and attributes it sets on
    `self` or `cls`. Setting another object's private attribute defines nothing: it is what the walk looks for."""
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            names.add(node.name)
        elif isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Store) and _on_self(node):
            names.add(node.attr)
        elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
            names.add(node.id)
        elif isinstance(node, ast.arg):
            names.add(node.arg)
        elif isinstance(node, ast.alias):
            names.add(node.asname or node.name.split(".")[-1])
    return {name for name in names if name.startswith("_")}


def _on_self(node: ast.Attribute) -> bool:
    return isinstance(node.value, ast.Name) and node.value.id in ("self", "cls")


INTERNAL_PACKAGES = {"internal", "usecases", "impl", "vendor"}
"""Module names that mark a package's insides even without an underscore (FastStream's `subscriber.usecases`)."""


def _private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def _internal(module: str) -> bool:
    return any(_private(part) or part in INTERNAL_PACKAGES for part in module.split("."))


def _third_party(module: str) -> bool:
    top = module.split(".")[0]
    return bool(top) and not top.startswith("chatbot_") and top not in sys.stdlib_module_names


def _imported_third_party(tree: ast.Module) -> set[str]:
    """Names bound by importing a third-party module or one of its names."""
    bound: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            bound |= {alias.asname or alias.name.split(".")[0] for alias in node.names if _third_party(alias.name)}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0 and _third_party(node.module):
            bound |= {alias.asname or alias.name for alias in node.names}
    return bound


def _uses(path: Path) -> list[tuple[int, str, str]]:
    """(line, name, what) for each use of a third-party package's insides in one file."""
    tree = ast.parse(path.read_text())
    theirs = _imported_third_party(tree)
    ours = _defined(tree)
    found: list[tuple[int, str, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, a.name, "imports an internal module") for a in node.names if _third_party(a.name) and _internal(a.name)]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0 and _third_party(node.module):
            if _internal(node.module):
                found.append((node.lineno, node.module, "imports from an internal module"))
            found += [(node.lineno, a.name, "imports a private name") for a in node.names if _private(a.name)]
        elif isinstance(node, ast.Attribute) and _private(node.attr) and not _on_self(node) and node.attr not in ours:
            what = "sets another object's private attribute" if isinstance(node.ctx, ast.Store) else "reads a private attribute"
            found.append((node.lineno, node.attr, what))
        elif isinstance(node, ast.Assign | ast.AugAssign | ast.AnnAssign):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            targets = [t for target in targets for t in (target.elts if isinstance(target, ast.Tuple) else [target])]
            for target in targets:
                if isinstance(target, ast.Attribute):
                    base = target.value
                    while isinstance(base, ast.Attribute):
                        base = base.value
                    if isinstance(base, ast.Name) and base.id in theirs:
                        found.append((node.lineno, ast.unparse(target), "assigns to a third-party module or class"))
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "setattr" and node.args:
            first = node.args[0]
            if isinstance(first, ast.Name) and first.id in theirs:
                found.append((node.lineno, ast.unparse(first), "setattr on a third-party module or class"))
    return found


def test_shipped_code_uses_only_public_apis_of_third_party_packages() -> None:
    problems: list[str] = []
    used_allowances: set[tuple[str, str]] = set()
    for path in SOURCES:
        relative = path.relative_to(ROOT).as_posix()
        for line, name, what in _uses(path):
            key = next((k for k in ALLOWED if k[0] == relative and (name == k[1] or name.startswith(k[1] + "."))), None)
            if key is not None:
                used_allowances.add(key)
                continue
            problems.append(f"{relative}:{line}: {what}: {name}")
    assert not problems, "third-party internals in shipped code:\n" + "\n".join(problems)
    assert used_allowances == set(ALLOWED), f"allowances no longer needed (remove them): {sorted(set(ALLOWED) - used_allowances)}"


def test_the_walk_catches_what_it_is_for(tmp_path: Path) -> None:
    sample = tmp_path / "sample.py"
    sample.write_text(
        "import redis\n"
        "from redis._parsers import hiredis\n"
        "from faststream import _internal\n"
        "import faststream._internal.constants as constants\n"
        "redis.Redis.execute_command = None\n"
        "setattr(redis, 'x', 1)\n"
        "connection = redis.Redis()\n"
        "reader = connection._parser\n"
        "connection._reader = None\n"
    )
    whats = sorted({what for _, _, what in _uses(sample)})
    assert whats == sorted(
        {
            "imports from an internal module",
            "imports a private name",
            "imports an internal module",
            "assigns to a third-party module or class",
            "setattr on a third-party module or class",
            "reads a private attribute",
            "sets another object's private attribute",
        }
    )
