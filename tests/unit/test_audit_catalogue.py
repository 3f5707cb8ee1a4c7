"""The audit catalogue lists exactly the actions the code writes (the docs are made from it)."""

from __future__ import annotations

import ast
import re
from pathlib import Path

from gateway.domain.audit.catalogue import ACTIONS

ROOT = Path(__file__).resolve().parents[2]
#: Strings shaped like actions that are not: logger names, file names, config keys.
NOT_ACTIONS = {
    "gateway.cli", "gateway.log", "ca.pub", "auth.failure_window_seconds",
    "auth.lockout_seconds", "auth.max_failures_per_source", "auth.max_failures_per_user",
    "auth.source_failures", "user.name", "session.id",
}  # fmt: skip


def written_actions() -> set[str]:
    """Every action-shaped string constant in gateway/ and tui/, and the recording
    purposes (``open_for_review(purpose="replayed")`` writes ``recording.replayed``)."""
    prefixes = {name.split(".")[0] for name in ACTIONS}
    shape = re.compile(rf"^({'|'.join(sorted(prefixes))})\.[a-z_]+$")
    found = set()
    for folder in ("gateway", "tui"):
        for path in (ROOT / folder).rglob("*.py"):
            if "migrations" in path.parts:
                continue
            for node in ast.walk(ast.parse(path.read_text(), str(path))):
                if isinstance(node, ast.Constant) and isinstance(node.value, str):
                    if shape.match(node.value):
                        found.add(node.value)
                elif (
                    isinstance(node, ast.keyword)
                    and node.arg == "purpose"
                    and isinstance(node.value, ast.Constant)
                    and node.value.value != "console"  # a sign-in's purpose, not a recording's
                ):
                    found.add(f"recording.{node.value.value}")
    return found - NOT_ACTIONS


def test_every_action_the_code_writes_is_documented_and_no_other() -> None:
    written = written_actions()
    assert not written - ACTIONS.keys(), "add these to gateway/domain/audit/catalogue.py"
    assert not ACTIONS.keys() - written, "the code no longer writes these"
    assert all(entry.trail in {"human", "machine", "both"} for entry in ACTIONS.values())
