"""The login screen: user name, password and TOTP code, as for SSH. No anonymous use.

It is the lock screen too: there it shows how many requests and break-glass
uses wait (counts only), so an approver sees them before unlocking.
"""

from __future__ import annotations

import math

from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.containers import Vertical
from textual.screen import Screen
from textual.widgets import Button, Footer, Input, Label

from gateway.domain.operators import roles_for
from gateway.domain.sign_in import SignInFailed
from gateway.errors import PamgateError
from tui.screens.section import console_of
from tui.widgets import TitleBar


class LoginScreen(Screen[None]):
    """Sign in; failures count towards the same lockout as SSH logins and are audited."""

    def __init__(self, message: str = "") -> None:
        super().__init__()
        self._message = message

    @property
    def _only_user(self) -> str | None:
        # A console served over SSH unlocks only for the person who logged in over SSH:
        # the session and its recording are theirs.
        return console_of(self).only_user

    def compose(self) -> ComposeResult:
        yield TitleBar()
        with Vertical(id="login"):
            yield Label("Sign in to the pamgate console", classes="dialog-title")
            # Above the fields, so it stays on screen at 80x24.
            yield Label(self._message, id="message", classes="problem", markup=False)
            yield Label("", id="waiting", classes="waiting-count")
            yield Input(placeholder="user name", id="user")
            yield Input(placeholder="password", password=True, id="password")
            yield Input(placeholder="verification code (TOTP)", id="code", max_length=10)
            yield Button("Sign in", variant="primary", id="sign-in")
        yield Footer()

    def show_waiting(self, sentence: str) -> None:
        """What waits for the operator, as counts (the console is locked: no names)."""
        found = self.query("#waiting")
        if not found:
            return  # not built yet: on_mount shows what waits then
        label = found.first(Label)
        label.update(Text(sentence))
        label.display = bool(sentence)

    def on_mount(self) -> None:
        self.show_waiting(console_of(self).waiting.sentence())
        only = self._only_user
        if only is not None:
            user_field = self.query_one("#user", Input)
            user_field.value, user_field.disabled = only, True
            self.query_one("#password", Input).focus()
        else:
            self.query_one("#user", Input).focus()

    def on_input_submitted(self, event: Input.Submitted) -> None:
        following = {"user": "#password", "password": "#code"}
        if event.input.id in following and not self.query_one("#code", Input).value:
            self.query_one(following[event.input.id], Input).focus()
        else:
            self._submit()

    def on_button_pressed(self) -> None:
        self._submit()

    def _submit(self) -> None:
        name = self.query_one("#user", Input).value.strip()
        password = self.query_one("#password", Input).value
        code = self.query_one("#code", Input).value.strip()
        if not (name and password and code):
            self.query_one("#message", Label).update("Give the user name, password and code.")
            return
        if self._only_user is not None and name != self._only_user:
            self.query_one("#message", Label).update(f"Only {self._only_user} can sign in here.")
            return
        self.query_one("#message", Label).update("Checking...")
        self.query_one("#sign-in", Button).disabled = True
        self._sign_in(name, password, code)

    @work(thread=True, exclusive=True)
    def _sign_in(self, name: str, password: str, code: str) -> None:
        console = console_of(self)
        services = console.services
        try:
            user = services.sign_in.sign_in(
                name, password, code, source=console.source, purpose="console"
            )
        except SignInFailed as failed:
            self.app.call_from_thread(self._failed, failure_message(failed))
            return
        except PamgateError as exc:
            self.app.call_from_thread(self._failed, f"Cannot sign in: {exc}")
            return
        if not roles_for(user.groups, services.config):
            self.app.call_from_thread(
                self._failed,
                f"{user.name} has no console role. Ask an admin to add you to an approver, "
                "auditor or admin group ([console] in the config).",
            )
            return
        self.app.call_from_thread(console.signed_in, user)

    def _failed(self, message: str) -> None:
        self.query_one("#message", Label).update(message)
        self.query_one("#password", Input).value = ""
        self.query_one("#code", Input).value = ""
        self.query_one("#sign-in", Button).disabled = False
        self.query_one("#password", Input).focus()


def failure_message(failed: SignInFailed) -> str:
    """What a refused sign-in is told: a back-off with its wait; otherwise one message for
    every other cause (saying which factor was wrong would help a guesser), which names
    the cause people hit most: a code used once already."""
    if failed.retry_after_seconds is not None:
        return (
            "Too many failed sign-ins for this user or address: "
            f"try again in {math.ceil(failed.retry_after_seconds)} s."
        )
    return (
        "Wrong user name, password or code. A code works only once: "
        "if you just used it, wait for the next one."
    )
