"""Named queries, loaded from ``sql/queries/*.sql``.

Each file holds blocks that start with ``-- name --`` and a one-line description comment,
as procrastinate's ``sql/queries.sql`` does. A query is addressed as ``"<file>.<name>"``,
e.g. ``QUERIES["attempts.record_outcomes"]``. Values always go in ``$n`` parameters.
"""

from __future__ import annotations

import re
from functools import cache
from pathlib import Path
from typing import LiteralString, cast

_HEADER = re.compile(r"^-- ([a-z_][a-z0-9_]*) --$", re.MULTILINE)


def sql_dir() -> Path:
    """Where the SQL lives: ``sql/`` beside the package in a checkout, inside it in a wheel."""
    package = Path(__file__).resolve().parent.parent
    for candidate in (package.parent / "sql", package / "sql"):
        if (candidate / "queries").is_dir():
            return candidate
    raise FileNotFoundError("the sql/ directory of collector is missing")


def parse_queries(prefix: str, text: str) -> dict[str, LiteralString]:
    """Split one ``.sql`` file into its named blocks."""
    parts = _HEADER.split(text)
    queries: dict[str, LiteralString] = {}
    # parts = [preamble, name1, body1, name2, body2, ...]
    for name, body in zip(parts[1::2], parts[2::2], strict=True):
        key = f"{prefix}.{name}"
        if key in queries:
            raise ValueError(f"query {key} is defined twice")
        # The text comes from our own files, never from input: it is a literal in spirit.
        queries[key] = cast(LiteralString, body.strip())
    return queries


@cache
def load_queries() -> dict[str, LiteralString]:
    """Every named query of every file in ``sql/queries``."""
    queries: dict[str, LiteralString] = {}
    for path in sorted((sql_dir() / "queries").glob("*.sql")):
        queries.update(parse_queries(path.stem, path.read_text(encoding="utf-8")))
    return queries


class _Queries:
    def __getitem__(self, key: str) -> LiteralString:
        return load_queries()[key]

    def __iter__(self):  # type: ignore[no-untyped-def]
        return iter(load_queries())


QUERIES = _Queries()
