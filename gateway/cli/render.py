"""How commands print tables and JSON.

Every command that prints rows of columns goes through :func:`print_table`:
each column padded to its widest cell, two spaces between columns, trailing
spaces stripped. Commands that print records rather than tables keep one line
per record with unpadded fields: ``audit tail`` and ``audit files`` print each
event as they read it (a trail can be long, and a table needs all its rows
before the first line), and ``recordings search``/``commands`` lines end in
the command text.

With ``--json`` (:func:`add_json_option`), listings print one JSON object per
line (JSON Lines: :func:`print_json_line`), one per row of the table, each
line flushed as it is written; an empty listing prints nothing. Commands that
show one thing (``machine show``) print one JSON document
(:func:`print_json_document`). Times are ISO 8601 in UTC (``...Z``), full
values stand where tables clip or abbreviate, and lists stay lists.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any


def table_lines(
    rows: Iterable[Sequence[str]], *, header: Sequence[str] | None = None, indent: str = ""
) -> list[str]:
    """The lines of a table: ``header`` (if any) then ``rows``, columns aligned."""
    lines = [list(header)] if header is not None else []
    lines += [list(row) for row in rows]
    if not lines:
        return []
    widths = [max(len(line[column]) for line in lines) for column in range(len(lines[0]))]

    def aligned(cells: list[str]) -> str:
        padded = (cell.ljust(width) for cell, width in zip(cells, widths, strict=True))
        return (indent + "  ".join(padded)).rstrip()

    return [aligned(line) for line in lines]


def print_table(
    rows: Iterable[Sequence[str]], *, header: Sequence[str] | None = None, indent: str = ""
) -> None:
    """Print a table (see the module docstring for its layout)."""
    for line in table_lines(rows, header=header, indent=indent):
        print(line)


def clip(text: str, width: int = 24) -> str:
    """Shorten free text for a table column, showing that it was cut."""
    return text if len(text) <= width else text[: width - 1] + "…"


def add_json_option(parser: argparse.ArgumentParser, *, document: bool = False) -> None:
    """``--json``: the output for scripts (see the module docstring)."""
    parser.add_argument(
        "--json", action="store_true",
        help="print one JSON document" if document else "print one JSON object per line",
    )  # fmt: skip


def print_json_line(value: Any) -> None:
    """Print one JSON object on its own line, flushed (a consumer may be reading as we go)."""
    print(json.dumps(value, ensure_ascii=False, default=_json_value), flush=True)


def print_json_document(value: Any) -> None:
    """Print one JSON document, indented for people who read it too."""
    print(json.dumps(value, ensure_ascii=False, indent=2, default=_json_value), flush=True)


def json_time(value: datetime | None) -> str | None:
    """A time as JSON output carries it: ISO 8601 in UTC, ``Z`` for the zone."""
    if value is None:
        return None
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z")


def _json_value(value: Any) -> Any:
    """What JSON output makes of values ``json`` does not know."""
    if isinstance(value, datetime):
        return json_time(value)
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, set | frozenset):
        return sorted(value)
    raise TypeError(f"{type(value).__name__} is not JSON output")
