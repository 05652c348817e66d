"""What every compatible API checks of a request's tool choice before the request reaches a provider."""

from __future__ import annotations

from collections.abc import Collection

from .errors import BadRequest


def check_tool_choice(forced: str | None, required: bool, names: Collection[str], param: str) -> None:
    """Refuse a tool choice that the request's own tools cannot honour: a forced tool (`forced`, its name) that is not
    among `names`, or a call required (`required`) of a request with no tools. `param` is the choice's path."""
    if forced is not None and forced not in names:
        shown = forced if len(forced) <= 64 else f"{forced[:64]}…"
        raise BadRequest(f"`tool_choice` forces the tool `{shown}`, which is not among the request's `tools` (at $.{param})", param=param)
    if required and not names:
        raise BadRequest(f"`tool_choice` requires a tool call, and the request has no `tools` (at $.{param})", param=param)
