"""Small modal dialogs: a comment or reason, and a break-glass verdict."""

from __future__ import annotations

from typing import TypeVar

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.screen import ModalScreen
from textual.widgets import Button, Input, Label, RadioButton, RadioSet

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

    def __init__(self, title: str, *, placeholder: str = "", required: bool = False) -> None:
        super().__init__()
        self._title = title
        self._placeholder = placeholder
        self._required = required

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog"):
            yield Label(self._title, classes="dialog-title", markup=False)
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
