"""The help overlay (``?``, F1 or ``h``): every key of the screen beneath it, k9s-style.

Built from the bindings Textual has active on that screen (its own, the
focused widget's and the console's), so it cannot drift from what the keys
really do.
"""

from __future__ import annotations

from rich.text import Text
from textual.actions import parse as parse_action
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical, VerticalScroll
from textual.screen import ModalScreen, Screen
from textual.widgets import Label, Static

#: Keys every list and replay shares that Textual does not list as bindings of the screen.
GENERAL_KEYS = (
    ("j / ↓, k / ↑", "move down / up in a list"),
    ("Enter", "open the highlighted row (everything about it, in full)"),
    ("/", "filter the list, or search inside a replay"),
    ("Esc", "leave a field or dialog; back"),
)


def key_rows(screen: Screen[object]) -> list[tuple[str, str]]:
    """(key, what it does) for every binding of ``screen`` and of the console that is on
    offer now: a list's own keys (arrows, Enter) are the general ones below, and a key the
    focused list takes for itself (Enter) is still listed with the screen's meaning."""
    app = screen.app
    rows: dict[str, tuple[str, str]] = {}
    offered = [
        (active.node, active.binding, active.enabled)
        for active in screen.active_bindings.values()
        if active.node is screen or active.node is app
    ]
    for bindings in screen._bindings.key_to_bindings.values():  # shadowed by the focus too
        for binding in bindings:
            _, name, parameters = parse_action(binding.action)
            offered.append((screen, binding, screen.check_action(name, parameters) is not False))
    for node, binding, enabled in offered:
        if not binding.description or not enabled or binding.system:
            continue
        key = f"{id(node)}:{binding.action}"
        rows.setdefault(key, (app.get_key_display(binding), binding.description))
    return list(rows.values())


class HelpScreen(ModalScreen[None]):
    """Lists the keys of the screen it was opened on; any of Esc, q, ? or F1 closes it."""

    BINDINGS = [
        Binding("escape,q,question_mark,f1,h", "close", "Close"),
        Binding("j,down", "cursor_down", "Down", show=False),
        Binding("k,up", "cursor_up", "Up", show=False),
    ]
    DEFAULT_CSS = """
    HelpScreen .dialog {
        width: 76;
        max-height: 100%;
    }
    HelpScreen VerticalScroll {
        height: auto;
        max-height: 1fr;
    }
    """

    def __init__(self, under: Screen[object], title: str) -> None:
        super().__init__()
        self._rows = key_rows(under)
        self._title = title

    def compose(self) -> ComposeResult:
        table = Text()
        width = max([len(key) for key, _ in (*self._rows, *GENERAL_KEYS)] + [4]) + 2
        for key, description in self._rows:
            table.append(key.ljust(width), style="bold")
            table.append(description + "\n")
        table.append("\n")
        for key, description in GENERAL_KEYS:
            table.append(key.ljust(width), style="bold")
            table.append(description + "\n")
        with Vertical(classes="dialog"):
            yield Label(Text(f"Keys: {self._title}"), classes="dialog-title")
            with VerticalScroll():
                yield Static(table, id="help-keys")
            yield Label(Text("Esc or ? closes", style="italic"))

    def action_close(self) -> None:
        self.dismiss(None)

    def action_cursor_down(self) -> None:
        self.query_one(VerticalScroll).scroll_relative(y=1, animate=False)

    def action_cursor_up(self) -> None:
        self.query_one(VerticalScroll).scroll_relative(y=-1, animate=False)
