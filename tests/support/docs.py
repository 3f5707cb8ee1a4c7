"""Reading the documentation the tests keep true: README.md and the pages under docs/."""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"


def page(name: str) -> str:
    """The text of ``docs/NAME`` (``README.md`` for the README itself)."""
    return (ROOT / name if name == "README.md" else DOCS / name).read_text()
