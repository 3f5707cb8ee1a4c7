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
    "review.overdue",  # a webhook's kind (its delivery is audited as alert.sent)
}  # fmt: skip


def _trees() -> list[ast.AST]:
    trees = []
    for folder in ("gateway", "tui"):
        for path in (ROOT / folder).rglob("*.py"):
            if "migrations" not in path.parts:
                trees.append(ast.parse(path.read_text(), str(path)))
    return trees


def written_actions() -> set[str]:
    """Every action-shaped string constant in gateway/ and tui/ whose prefix is one the
    code writes actions under (any ``action="x.y"`` keyword, or the catalogue's), and the
    recording purposes (``open_recording(..., purpose="replayed")`` writes
    ``recording.replayed``)."""
    trees = _trees()
    prefixes = {name.split(".")[0] for name in ACTIONS}
    for tree in trees:
        for node in ast.walk(tree):
            if (
                isinstance(node, ast.keyword)
                and node.arg == "action"
                and isinstance(node.value, ast.Constant)
                and isinstance(node.value.value, str)
            ):
                prefixes.add(node.value.value.split(".")[0])
    shape = re.compile(rf"^({'|'.join(sorted(prefixes))})\.[a-z_]+$")
    found = set()
    for tree in trees:
        for node in ast.walk(tree):
            if isinstance(node, ast.Constant) and isinstance(node.value, str):
                if shape.match(node.value):
                    found.add(node.value)
            elif isinstance(node, ast.Call) and getattr(node.func, "attr", "") in {
                "open_recording", "open_for_review",
            }:  # fmt: skip
                for keyword in node.keywords:
                    if keyword.arg == "purpose" and isinstance(keyword.value, ast.Constant):
                        found.add(f"recording.{keyword.value.value}")
    return found - NOT_ACTIONS


def test_every_action_the_code_writes_is_documented_and_no_other() -> None:
    written = written_actions()
    assert not written - ACTIONS.keys(), "add these to gateway/domain/audit/catalogue.py"
    assert not ACTIONS.keys() - written, "the code no longer writes these"
    assert all(entry.trail in {"human", "machine", "both"} for entry in ACTIONS.values())
