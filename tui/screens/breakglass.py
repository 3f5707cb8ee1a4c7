"""BreakGlassScreen (being written)."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.widgets import Static

from tui.roles import Role
from tui.screens.section import SectionScreen


class BreakGlassScreen(SectionScreen):
    view_roles = frozenset({Role.AUDITOR, Role.APPROVER, Role.ADMIN})
    purpose = "see break-glass cases"

    def compose_section(self) -> ComposeResult:
        yield Static("coming soon")

    def load(self) -> object:
        return None

    def show(self, data: object) -> None:
        pass
