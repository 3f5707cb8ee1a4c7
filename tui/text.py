"""Formatting for console cells: ages, and untrusted text made safe and short."""

from __future__ import annotations

from datetime import datetime

from rich.text import Text

from recordings.sanitize import one_line as escape_controls


def age(then: datetime, now: datetime) -> str:
    """``42s``, ``5m``, ``3h``, ``2d``."""
    seconds = max(int((now - then).total_seconds()), 0)
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def cell(text: object, width: int = 60) -> Text:
    """Untrusted text for a table cell or label: controls escaped, cut to ``width``.

    A ``Text`` is never read as console markup, so ``[bold]`` in a reason stays literal.
    """
    plain = escape_controls(str(text))
    return Text(plain if len(plain) <= width else plain[: width - 1] + "…")
