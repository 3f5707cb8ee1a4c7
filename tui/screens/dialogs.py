"""Small modal dialogs: a comment or reason, a break-glass verdict, and a row in full."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TypeVar

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Button, Input, Label, RadioButton, RadioSet, Static

from recordings.sanitize import one_line as escape_controls

T = TypeVar("T")


class FormDialog(ModalScreen[T]):
    """A small form: Enter or OK submits (:meth:`submit`), Escape or Cancel gives None."""

    BINDINGS = [Binding("escape", "cancel", "Cancel")]

    def on_input_submitted(self) -> None:
        self.submit()

    def on_button_pressed(self, event: Button.Pressed) -> None:
        if event.button.id == "ok":
            self.submit()
        else:
            self.dismiss(None)

    def action_cancel(self) -> None:
        self.dismiss(None)

    def submit(self) -> None:
        raise NotImplementedError


class TextDialog(FormDialog[str | None]):
    """Ask for one line of text (a comment, a reason); None if cancelled."""

    def __init__(
        self,
        title: str,
        *,
        placeholder: str = "",
        required: bool = False,
        facts: Sequence[tuple[str, object]] = (),
    ) -> None:
        """``facts`` (name, value) are shown in full above the field: what is being decided
        (the requester's reason, the grant's length), so nobody decides on a cut-off line."""
        super().__init__()
        self._title = title
        self._placeholder = placeholder
        self._required = required
        self._facts = list(facts)

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog"):
            yield Label(self._title, classes="dialog-title", markup=False)
            for name, value in self._facts:
                line = Text(f"{name}: ", style="bold")
                line.append_text(full_text(value))
                yield Label(line, classes="dialog-fact")
            yield Input(placeholder=self._placeholder, id="text")
            yield Label("", id="problem", classes="problem")
            with Horizontal(classes="dialog-buttons"):
                yield Button("OK", variant="primary", id="ok")
                yield Button("Cancel", id="cancel")

    def submit(self) -> None:
        text = self.query_one("#text", Input).value.strip()
        if self._required and not text:
            self.query_one("#problem", Label).update("This cannot be empty.")
            return
        self.dismiss(text)


class VerdictDialog(FormDialog[tuple[str, str] | None]):
    """A break-glass verdict (justified or unjustified) with a note; None if cancelled."""

    def __init__(self, title: str) -> None:
        super().__init__()
        self._title = title

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog"):
            yield Label(self._title, classes="dialog-title", markup=False)
            with RadioSet(id="verdict"):
                yield RadioButton("justified", value=True)
                yield RadioButton("unjustified")
            yield Input(placeholder="note (required)", id="note")
            yield Label("", id="problem", classes="problem")
            with Horizontal(classes="dialog-buttons"):
                yield Button("Record", variant="primary", id="ok")
                yield Button("Cancel", id="cancel")

    def on_mount(self) -> None:
        # The note is what always needs typing; the verdict defaults to justified.
        self.query_one("#note", Input).focus()

    def submit(self) -> None:
        note = self.query_one("#note", Input).value.strip()
        if not note:
            self.query_one("#problem", Label).update("A note is required.")
            return
        pressed = self.query_one("#verdict", RadioSet).pressed_button
        verdict = str(pressed.label) if pressed is not None else "justified"
        self.dismiss((verdict, note))


class DetailDialog(ModalScreen[None]):
    """Everything about one row, untruncated: reasons, comments, notes, an event's JSON.

    Tables cut text to fit 80 columns; this is where the whole of it is read.
    Every value is untrusted (typed by users, or read from a trail that may be
    tampered with): controls are escaped and nothing is read as markup.
    """

    BINDINGS = [
        Binding("escape,q,enter", "close", "Close"),
        Binding("j,down", "cursor_down", "Down", show=False),
        Binding("k,up", "cursor_up", "Up", show=False),
    ]
    DEFAULT_CSS = """
    DetailDialog .dialog {
        width: 100;
        max-height: 90%;
    }
    DetailDialog VerticalScroll {
        height: auto;
        max-height: 1fr;
    }
    DetailDialog .detail-name {
        color: $text-muted;
        width: 100%;
    }
    DetailDialog .detail-value {
        width: 100%;
    }
    """

    def __init__(self, title: str, fields: Sequence[tuple[str, object]]) -> None:
        super().__init__()
        self._title = title
        self._fields = list(fields)

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog"):
            yield Label(Text(escape_controls(self._title)), classes="dialog-title")
            with VerticalScroll(id="detail-fields"):
                for name, value in self._fields:
                    text = full_text(value)
                    # A long or many-line value starts on its own line, so it reads as a block.
                    long = "\n" in text.plain or len(text.plain) > 60
                    line = Text(f"{name}:" + ("\n" if long else " "), style="bold")
                    line.append_text(text)
                    yield Static(line, classes="detail-value")
            yield Label(Text("Esc, q or Enter closes"), classes="detail-name")

    def action_close(self) -> None:
        self.dismiss(None)

    def action_cursor_down(self) -> None:
        self.query_one("#detail-fields", VerticalScroll).scroll_relative(y=1, animate=False)

    def action_cursor_up(self) -> None:
        self.query_one("#detail-fields", VerticalScroll).scroll_relative(y=-1, animate=False)


def full_text(value: object) -> Text:
    """A value in full, on as many lines as it has; controls other than newlines escaped."""
    if value is None or value == "":
        return Text("-", style="dim")
    lines = str(value).split("\n")
    return Text("\n".join(escape_controls(line) for line in lines))
