"""Markdown tables for the reports every benchmark writes: one writer, so they all read alike."""
from __future__ import annotations

from collections.abc import Iterable, Sequence


def markdown_table(header: Sequence[object], rows: Iterable[Sequence[object]]) -> str:
    """A GitHub-flavoured table; ``_not run_`` when there is no row (a report still says so)."""
    body = [row(*r) for r in rows]
    if not body:
        return "_not run_"
    return "\n".join([*head(header), *body])


def head(header: Sequence[object]) -> list[str]:
    """A table's first two lines, for reports that append their rows one by one with ``row``."""
    return [row(*header), row(*("---" for _ in header))]


def row(*cells: object) -> str:
    return "| " + " | ".join(str(c) for c in cells) + " |"
