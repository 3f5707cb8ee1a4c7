"""docs/architecture.md places every module of the tree (it is kept true by this test)."""

from __future__ import annotations

import re
from pathlib import Path

from tests.support.docs import page

ROOT = Path(__file__).resolve().parents[2]


def layout_section() -> str:
    return page("architecture.md")


def test_every_module_is_placed_in_the_layout() -> None:
    section = layout_section()
    named = set(re.findall(r"[\w.]+\.(?:py|tcss)\b", section))
    missing = []
    for package in ("gateway", "recordings", "tui"):
        for path in sorted((ROOT / package).rglob("*.py")):
            if path.name == "__init__.py" or "migrations" in path.parts:
                continue
            if path.parent.name == "screens":
                if path.stem not in section:
                    missing.append(str(path.relative_to(ROOT)))
            elif path.name not in named:
                missing.append(str(path.relative_to(ROOT)))
    assert not missing, f"modules docs/architecture.md does not place: {missing}"
