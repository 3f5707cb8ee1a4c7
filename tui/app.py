"""The console application: sign-in, the section switcher, idle lock.

Sections are screens (:mod:`tui.screens`); one is shown at a time, chosen
with the number keys declared here. Dialogs are modal screens on top. All
I/O runs in thread workers; screens poll the shared database each second,
so changes made anywhere (another console, the CLI, a gateway node) show up
within about a second.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Callable, Iterable
from datetime import UTC, datetime

from rich.text import Text
from textual import events, work
from textual.app import App, SystemCommand
from textual.binding import Binding
from textual.notifications import SeverityLevel
from textual.screen import Screen

from gateway.config import duration_seconds
from gateway.domain.identities import UserView
from gateway.domain.operators import (
    ActionContext,
    Operator,
    OperatorActions,
    OperatorSignedOut,
    operator_of,
)
from gateway.errors import PamgateError
from gateway.services import GatewayServices
from recordings.sanitize import one_line as escape_controls
from tui.alerts import Waiting
from tui.screens.access import AccessScreen
from tui.screens.audit import AuditScreen
from tui.screens.breakglass import BreakGlassScreen
from tui.screens.help import HelpScreen
from tui.screens.identities import IdentitiesScreen
from tui.screens.login import LoginScreen
from tui.screens.recordings import RecordingsScreen
from tui.screens.requests import RequestsScreen
from tui.screens.sessions import SessionsScreen

#: Section name -> (screen factory, title, short title). The number keys follow this order;
#: the short titles are the sections bar's when the full ones do not fit.
SECTIONS: dict[str, tuple[Callable[[], Screen[None]], str, str]] = {
    "requests": (RequestsScreen, "Requests", "Req"),
    "sessions": (SessionsScreen, "Sessions", "Sess"),
    "breakglass": (BreakGlassScreen, "Break-glass", "Glass"),
    "recordings": (RecordingsScreen, "Recordings", "Rec"),
    "audit": (AuditScreen, "Audit", "Audit"),
    "identities": (IdentitiesScreen, "Identities", "Ids"),
    "access": (AccessScreen, "Access", "Acc"),
}
#: The quickest the console reads what waits for the operator (the badge, bell and toast).
WAITING_SECONDS = 0.5


class PamgateConsole(App[None]):
    """``pamgate console``."""

    TITLE = "pamgate console"
    CSS_PATH = "console.tcss"
    # Section keys live in the sections bar under the header, so the footer
    # has room for the screen's own actions at 80 columns.
    BINDINGS = [
        *(
            Binding(str(number), f"section('{name}')", title, show=False)
            for number, (name, (_, title, _short)) in enumerate(SECTIONS.items(), start=1)
        ),
        # h as in htop; ? as in k9s and lazygit; F1 as everywhere else.
        Binding("question_mark,f1,h", "help", "Help", key_display="?"),
        Binding("ctrl+l", "lock", "Lock", show=False),
        Binding("ctrl+q", "quit", "Quit", key_display="^q"),
    ]

    def __init__(
        self,
        services: GatewayServices,
        *,
        source: str | None = None,
        idle_lock_seconds: float | None = None,
        refresh_seconds: float = 1.0,
        clock: Callable[[], datetime] | None = None,
        signed_in_as: UserView | None = None,
        action_context: ActionContext | None = None,
    ) -> None:
        """``signed_in_as`` starts signed in (the console served over SSH, after the SSH
        login's two factors), and then only that user can unlock it. ``refresh_seconds`` and
        ``clock`` exist for tests that need a still picture."""
        super().__init__()
        self._start_user = signed_in_as
        self._action_context = action_context
        #: The only user who may sign in (a console served over SSH), or None.
        self.only_user = signed_in_as.name if signed_in_as is not None else None
        self.services = services
        self.refresh_seconds = refresh_seconds
        self._clock = clock or (lambda: datetime.now(UTC))
        self.source = source or f"console:{socket.gethostname()}"
        self.user: Operator | None = None
        #: What the signed-in operator may do; every action is checked against their roles.
        self.actions: OperatorActions | None = None
        self.idle_lock_seconds = (
            idle_lock_seconds
            if idle_lock_seconds is not None
            else duration_seconds(services.config.console.idle_lock)
        )
        self._last_activity = time.monotonic()
        #: The operator whose waiting requests the badge counts; kept while locked (counts
        #: only are shown then), dropped when they are disabled or removed.
        self._alert_actions: OperatorActions | None = None
        self._alert_operator = ""
        #: What waits for the operator, as last read.
        self.waiting = Waiting()
        #: Reads of what waits started, and the newest one shown (reads may overlap).
        self._waiting_reads = 0
        self._waiting_shown = 0

    def notify(
        self,
        message: str,
        *,
        title: str = "",
        severity: SeverityLevel = "information",
        timeout: float | None = None,
        markup: bool = True,
    ) -> None:
        # Messages carry names, reasons and commands people typed: never read them as markup.
        del markup
        super().notify(message, title=title, severity=severity, timeout=timeout, markup=False)

    def now(self) -> datetime:
        """The time ages are measured against."""
        return self._clock()

    def on_mount(self) -> None:
        self.push_screen(LoginScreen())
        self.set_interval(1.0, self._lock_when_idle)
        # Every half second to a second, whatever the sections' refresh: a new request must
        # be told within 2 s, and a busy refresh (tests use 0.05 s) must not flood the store.
        self.set_interval(min(max(self.refresh_seconds, WAITING_SECONDS), 1.0), self._read_waiting)
        if self._start_user is not None:
            self.call_after_refresh(self.signed_in, self._start_user)

    async def on_event(self, event: events.Event) -> None:
        if isinstance(event, events.Key | events.MouseDown | events.MouseScrollDown):
            self._last_activity = time.monotonic()
        await super().on_event(event)

    # -- signing in and out ------------------------------------------------

    def signed_in(self, user: UserView) -> None:
        """Called by the login screen with a user whose factors checked out."""
        self.user = operator_of(user, self.services.config)
        self.actions = self.services.operator_actions(user.name, context=self._action_context)
        self.sub_title = f"{user.name} ({self.user.describe_roles()})"
        self._last_activity = time.monotonic()
        if self._alert_operator != user.name:
            self.waiting = Waiting()  # someone else's counts are not this operator's news
        self._alert_actions, self._alert_operator = self.actions, user.name
        self.switch_screen(RequestsScreen())
        self._read_waiting()

    def lock(self, why: str) -> None:
        """Back to the login screen; nothing of the session stays on screen."""
        if self.user is None:
            return  # locked already (a worker that was still reading found out late)
        self.user = None
        self.actions = None
        self.sub_title = ""
        while len(self.screen_stack) > 2:
            self.pop_screen()
        self.switch_screen(LoginScreen(message=why))

    def _lock_when_idle(self) -> None:
        if not self.screen_stack:
            # The console is closing: its screens are gone before its timers stop.
            return
        if getattr(self.screen, "keeps_console_awake", False):
            # A replay that is playing is being watched, keys or not.
            self._last_activity = time.monotonic()
        idle = time.monotonic() - self._last_activity
        if self.user is not None and idle >= self.idle_lock_seconds:
            self.lock(f"Locked after {int(self.idle_lock_seconds // 60) or 1} min without input.")

    # -- what waits: badge, bell, toast ---------------------------------------

    def _read_waiting(self) -> None:
        if self._alert_actions is not None:
            self._waiting_reads += 1
            self._read_waiting_in_background(
                self._alert_actions, self._alert_operator, self._waiting_reads
            )

    @work(thread=True, group="waiting")
    def _read_waiting_in_background(
        self, actions: OperatorActions, operator: str, number: int
    ) -> None:
        try:
            waiting = Waiting.read(actions, operator)
        except OperatorSignedOut:
            self.call_from_thread(self._stop_alerts, actions)
            return
        except PamgateError:
            return  # the sections say what went wrong; the badge keeps its last count
        self.call_from_thread(self._show_waiting, actions, waiting, number)

    def _stop_alerts(self, actions: OperatorActions) -> None:
        if self._alert_actions is actions:
            self._alert_actions, self.waiting = None, Waiting()
            self._redraw_waiting()

    def _show_waiting(self, actions: OperatorActions, waiting: Waiting, number: int) -> None:
        if self._alert_actions is not actions or number < self._waiting_shown:
            # Read for an operator who has gone since, or overtaken by a newer read: an
            # older picture would make the next one announce the same request again.
            return
        self._waiting_shown = number
        news = waiting.news(self.waiting)
        self.waiting = waiting
        if news:
            self.bell()
            signed_in = self.user is not None
            for title, text in news.messages(detailed=signed_in):
                severity: SeverityLevel = "error" if title.startswith("BREAK") else "warning"
                self.notify(escape_controls(text), title=title, severity=severity, timeout=15)
        self._redraw_waiting()

    def _redraw_waiting(self) -> None:
        for screen in self.screen_stack:
            for widget in screen.query(".waiting"):
                widget.refresh()
            if isinstance(screen, LoginScreen):
                screen.show_waiting(self.waiting.sentence())

    # -- actions -------------------------------------------------------------

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action in ("section", "lock"):
            return self.user is not None
        return True

    def action_help(self) -> None:
        """The keys of the screen in front, in an overlay (not over another overlay)."""
        if isinstance(self.screen, HelpScreen):
            return
        title = next(
            (title for factory, title, _ in SECTIONS.values() if type(self.screen) is factory),
            type(self.screen).__name__.removesuffix("Screen"),
        )
        self.push_screen(HelpScreen(self.screen, title))

    def action_help_quit(self) -> None:
        # Textual's own says "[b]ctrl+q[/b]" as markup, which notify (rightly) shows raw.
        self.notify("Ctrl+C does not quit: press Ctrl+Q to quit, ? for every key.")

    def action_section(self, name: str) -> None:
        if self.user is None or name not in SECTIONS:
            return
        while len(self.screen_stack) > 2:
            self.pop_screen()
        factory, _, _ = SECTIONS[name]
        self.switch_screen(factory())

    def action_lock(self) -> None:
        self.lock("Locked.")

    def sections_bar(self, current: object, width: int = 80) -> Text:
        """``1 Requests 2 Sessions ...`` with the current section highlighted, then the
        waiting badge (``2 req 1 bg``, reversed red) and the help key; fits ``width``."""
        full = self._sections_bar(current, short=False)
        # Full titles fit 80 columns (79); with a badge they do not, and the titles give way.
        return full if full.cell_len <= width else self._sections_bar(current, short=True)

    def _sections_bar(self, current: object, *, short: bool) -> Text:
        bar = Text()
        for number, (factory, title, abbreviation) in enumerate(SECTIONS.values(), start=1):
            style = "reverse bold" if type(current) is factory else ""
            bar.append(f" {number} {abbreviation if short else title}", style=style)
        badge = self.waiting.badge()
        if badge:
            bar.append("  ")
            bar.append(f" ● {badge} ", style="bold reverse red")
        # Where it is always seen, whatever the footer has room for; ? lists the rest.
        bar.append("  ? Help")
        return bar

    def get_system_commands(self, screen: Screen[object]) -> Iterable[SystemCommand]:
        for command in super().get_system_commands(screen):
            # A screenshot would copy what is on screen (a replay, say) without an audit record.
            if command.title != "Screenshot":
                yield command
        # The current screen's bindings (and the sections), so the palette lists every key.
        for key, active in screen.active_bindings.items():
            binding = active.binding
            if binding.action not in ("quit", "help") and binding.description and active.enabled:
                yield SystemCommand(
                    binding.description,
                    f"key {key}",
                    lambda node=active.node, action=binding.action: self.call_later(
                        self.run_action, action, node
                    ),
                )
