"""What every console section shares: role checks, live refresh, errors shown plainly."""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar, cast

from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.css.query import NoMatches
from textual.screen import Screen
from textual.widget import Widget
from textual.widgets import Footer, Input, Static

from gateway.domain.operators import Operator, OperatorActions, OperatorSignedOut, Role
from gateway.errors import PamgateError
from tui.tables import LiveTable
from tui.widgets import TitleBar

if TYPE_CHECKING:
    from tui.app import PamgateConsole

T = TypeVar("T")


def console_of(screen: Screen[Any]) -> PamgateConsole:
    """The console app ``screen`` runs in (Textual types ``app`` as the App base class)."""
    return cast("PamgateConsole", screen.app)


def deliver(screen: Screen[Any], callback: Callable[..., object], *args: object) -> None:
    """From a worker thread: run ``callback`` on the UI if ``screen`` is still shown.

    A worker can finish after its screen was left or the console locked; then
    there is nothing to draw on, and no one to show it to.
    """

    def run() -> None:
        console = screen.app
        if screen not in console.screen_stack or getattr(console, "user", None) is None:
            return
        with contextlib.suppress(NoMatches):  # the screen is being taken down
            callback(*args)

    screen.app.call_from_thread(run)


class SectionsBar(Widget):
    """The line under the header: the sections and their number keys, the current one
    highlighted, and the badge of what waits for the operator. Drawn for its width."""

    DEFAULT_CSS = """
    SectionsBar {
        height: 1;
    }
    """

    def __init__(self) -> None:
        super().__init__(classes="sections-bar waiting")

    def render(self) -> Text:
        return console_of(self.screen).sections_bar(self.screen, self.size.width)


class SectionScreen(Screen[None]):
    """A section: shown only to users with one of ``view_roles``; refreshed every second."""

    #: Roles that may see the section.
    view_roles: ClassVar[frozenset[Role]]
    #: What seeing it means, for the missing-role message ("see access requests").
    purpose: ClassVar[str]

    @property
    def console(self) -> PamgateConsole:
        return console_of(self)

    @property
    def actions(self) -> OperatorActions:
        """What the signed-in operator may do (the domain checks each action's role)."""
        actions = self.console.actions
        if actions is None:  # locked while a worker was still reading
            raise OperatorSignedOut("the console is locked")
        return actions

    @property
    def user(self) -> Operator:
        user = self.console.user
        assert user is not None, "sections are shown only when signed in"
        return user

    @property
    def allowed(self) -> bool:
        return bool(self.user.roles & self.view_roles)

    def compose(self) -> ComposeResult:
        yield TitleBar()
        yield SectionsBar()
        if self.allowed:
            yield from self.compose_section()
        else:
            needed = " or ".join(sorted(self.view_roles))
            yield Static(
                Text(f"You need the {needed} role to {self.purpose}. "
                     f"You are {self.user.name} ({self.user.describe_roles()})."),
                classes="missing-role",
            )  # fmt: skip
        yield Footer()

    def compose_section(self) -> ComposeResult:
        raise NotImplementedError

    # -- "/" in a section whose lists have no filter of their own ------------------------

    def action_filter_list(self) -> None:
        """Open the filter line under the lists (``/``): rows that contain its text stay."""
        if not self.allowed:
            return
        field = self._list_filter()
        field.display = True
        field.focus()

    def _list_filter(self) -> Input:
        found = self.query("#list-filter")
        if found:
            return found.first(Input)
        field = Input(placeholder="filter: rows containing this text (Enter; empty clears)",
                      id="list-filter")  # fmt: skip
        self.mount(field, before=self.query_one(Footer))
        return field

    def on_input_submitted(self, event: Input.Submitted) -> None:
        if event.input.id != "list-filter":
            return
        event.stop()
        text = event.value.strip()
        tables = list(self.query(LiveTable))
        for table in tables:
            table.set_filter(text)
        event.input.display = bool(text)  # an active filter stays in sight
        if tables:
            tables[0].focus()
        if text:
            shown = sum(table.row_count for table in tables)
            total = sum(table.total for table in tables)
            self.notify(f"{shown} of {total} rows contain {text!r}; / and Enter on an empty "
                        "line shows them all.", timeout=4)  # fmt: skip

    def on_mount(self) -> None:
        if self.allowed:
            self.refresh_data()
            self.set_interval(self.console.refresh_seconds, self.refresh_data)

    def refresh_data(self) -> None:
        """Load from the services (in a worker) and show; sections override :meth:`load`."""
        self._load_in_background()

    @work(thread=True, exclusive=True, group="refresh")
    def _load_in_background(self) -> None:
        try:
            data = self.load()
        except OperatorSignedOut as exc:
            self.app.call_from_thread(self.console.lock, str(exc))
            return
        except PamgateError as exc:
            self.app.call_from_thread(self.notify, str(exc), severity="error")
            return
        deliver(self, self.show, data)

    def load(self) -> object:
        """Read what the section shows (runs in a thread)."""
        raise NotImplementedError

    def show(self, data: object) -> None:
        """Display what :meth:`load` read (runs on the UI)."""
        raise NotImplementedError

    def can(self, role: Role, to_do: str) -> bool:
        """True if the user has ``role``; otherwise say plainly why not."""
        missing = self.user.missing(role, to_do)
        if missing:
            self.notify(missing, severity="warning")
            return False
        return True

    def run_service(self, call: Callable[[], T], done: Callable[[T], object] | None = None) -> None:
        """Run a domain call in a worker; errors are shown, ``done`` gets the result."""
        self._run_service(call, done)

    @work(thread=True, group="actions")
    def _run_service(self, call: Callable[[], T], done: Callable[[T], object] | None) -> None:
        try:
            result = call()
        except OperatorSignedOut as exc:
            self.app.call_from_thread(self.console.lock, str(exc))
            return
        except PamgateError as exc:
            self.app.call_from_thread(self.notify, str(exc), severity="error", timeout=8)
            return
        if done is not None:
            deliver(self, done, result)
        deliver(self, self.refresh_data)
