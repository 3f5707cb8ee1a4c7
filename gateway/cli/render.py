"""How commands print tables and JSON.

Every command that prints rows of columns goes through :func:`print_table`:
each column padded to its widest cell, two spaces between columns, trailing
spaces stripped. Commands that print records rather than tables keep one line
per record with unpadded fields: ``audit tail`` and ``audit files`` print each
event as they read it (a trail can be long, and a table needs all its rows
before the first line), and ``recordings search``/``commands`` lines end in
the command text.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
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


def print_json_line(value: Any) -> None:
    """Print one JSON object on its own line, flushed (a consumer may be reading as we go)."""
    print(json.dumps(value, ensure_ascii=False), flush=True)
