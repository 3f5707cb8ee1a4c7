"""Identities: human users and machine identities (NHIs), live, with the admin's actions.

Auditors and admins see both tabs; every change needs the admin role and goes
through the domain services, which audit it with the signed-in admin as actor.
Each action works on the selected row of the active tab, and its key is hidden
on the other tab.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.notifications import SeverityLevel
from textual.screen import ModalScreen
from textual.widgets import Button, DataTable, Label, TabbedContent, TabPane

from gateway.domain.identities import TotpEnrolment, UserView
from gateway.domain.machines.registry import STATUSES, MachineView
from gateway.domain.machines.revocation import Revocation
from gateway.domain.operators import SEE_IDENTITIES, Role
from tui.screens.dialogs import DetailDialog, TextDialog
from tui.screens.section import SectionScreen
from tui.tables import LiveTable, Row
from tui.text import cell

HUMANS = "humans"
MACHINES = "machines"
#: Actions per tab; each is offered only on its own tab.
TAB_ACTIONS = {
    HUMANS: frozenset({"enable", "disable", "reset_mfa"}),
    MACHINES: frozenset({"suspend", "resume", "offboard", "revoke"}),
}
PUBLISH_KRL = "Publish the revocations to targets with 'pamgate machine krl -o FILE'."


@dataclass(frozen=True)
class IdentitiesData:
    """One refresh's worth of identities."""

    users: list[UserView]
    machines: list[MachineView]
    #: Outstanding (in use, unrevoked, unexpired) machine certificates per NHI.
    certificates: Counter[str]


def factors(user: UserView) -> str:
    """``password+key+totp``, as ``pamgate user list`` says it; TOTP is always required."""
    present = (("password", user.has_password), ("key", bool(user.key_fingerprints)))
    return "+".join([*(name for name, has in present if has), "totp"])


def review_cell(review_by: datetime | None, now: datetime) -> Text:
    """The review date, flagged ``OVERDUE`` once it has passed; ``-`` if none is set."""
    if review_by is None:
        return Text("-")
    if now > review_by:
        return Text(f"{review_by:%Y-%m-%d} OVERDUE", style="bold red")
    return Text(f"{review_by:%Y-%m-%d}")


def human_row(user: UserView) -> Row:
    """A row of the Humans tab, keyed by name."""
    status = Text("disabled", style="bold red") if user.disabled else Text("enabled")
    groups = cell(", ".join(user.groups), 30)
    return user.name, (cell(user.name, 24), groups, status, factors(user))


#: How a machine's status stands out; active is plain.
STATUS_STYLES = {"suspended": "bold yellow", "offboarded": "dim"}


def machine_row(machine: MachineView, certificates: int, now: datetime) -> Row:
    """A row of the Machines tab, keyed by name."""
    status = cell(machine.status, 12)
    if machine.status in STATUS_STYLES:
        status.stylize(STATUS_STYLES[machine.status])
    return machine.name, (
        cell(machine.name, 24), cell(machine.kind, 16), status,
        cell(f"{machine.owner} / {machine.tech_owner}", 30), review_cell(machine.review_by, now),
        str(certificates), cell(scope_summary(machine), 60),
    )  # fmt: skip


def user_facts(user: UserView) -> list[tuple[str, object]]:
    """Everything about a user, for the detail view (no secret, no hash)."""
    return [
        ("Name", user.name), ("Status", "disabled" if user.disabled else "enabled"),
        ("Groups", ", ".join(user.groups)), ("Factors", factors(user)),
        ("Keys", "\n".join(user.key_fingerprints)),
        ("Created", f"{user.created_at:%Y-%m-%d %H:%M:%S} UTC"),
    ]  # fmt: skip


def machine_facts(machine: MachineView, certificates: int) -> list[tuple[str, object]]:
    """Everything about an NHI, for the detail view."""
    return [
        ("Name", machine.name), ("Kind", machine.kind), ("Purpose", machine.purpose),
        ("Status", machine.status), ("Why (last status change)", machine.status_reason),
        ("Owner", machine.owner), ("Technical owner", machine.tech_owner),
        ("Review by", f"{machine.review_by:%Y-%m-%d}" if machine.review_by else None),
        ("Outstanding certificates", certificates), ("Scope", scope_summary(machine)),
        ("Sources", ", ".join(machine.sources)),
        ("Last used", f"{machine.last_used_at:%Y-%m-%d %H:%M:%S} UTC"
         if machine.last_used_at else None),
    ]  # fmt: skip


def scope_summary(machine: MachineView) -> str:
    """Where an NHI may go and what it may run, in one line."""
    where = ", ".join(f"{t.account}@{t.target}" for t in machine.targets)
    extras = [label for label, on in (("pty", machine.allow_pty), ("sftp", machine.allow_sftp))
              if on]  # fmt: skip
    allowed = f" (+{', '.join(extras)})" if extras else ""
    return f"{where}: {'; '.join(machine.commands)}{allowed}"


class EnrolmentDialog(ModalScreen[None]):
    """A new TOTP secret, shown once so the admin can hand it over; it is not kept anywhere."""

    BINDINGS = [Binding("escape", "close", "Close")]

    def __init__(self, enrolment: TotpEnrolment) -> None:
        super().__init__()
        self._enrolment = enrolment

    def compose(self) -> ComposeResult:
        enrolment = self._enrolment
        with Vertical(classes="dialog"):
            yield Label(cell(f"New authenticator secret for {enrolment.user}"),
                        classes="dialog-title")  # fmt: skip
            yield Label(Text(f"Secret: {enrolment.secret}"), id="secret")
            yield Label(Text(f"URI: {enrolment.uri}"), id="uri")
            yield Label(
                "Hand it over on a trusted channel; it is not shown again. "
                "The old codes stopped working."
            )
            with Horizontal(classes="dialog-buttons"):
                yield Button("Close", variant="primary", id="close")

    def on_button_pressed(self) -> None:
        self.dismiss(None)

    def action_close(self) -> None:
        self.dismiss(None)


class IdentitiesScreen(SectionScreen):
    """Admins manage people and NHIs here; auditors can look."""

    view_roles = SEE_IDENTITIES
    purpose = "see identities"
    # The same letter means the same everywhere: g revokes (a grant in Sessions), ] and [
    # switch tabs (as in Audit); o opens a recording elsewhere, so offboarding is f.
    BINDINGS = [
        Binding("e", "enable", "Enable"),
        Binding("x", "disable", "Disable"),
        Binding("m", "reset_mfa", "Reset MFA"),
        Binding("s", "suspend", "Suspend"),
        Binding("r", "resume", "Resume"),
        Binding("f", "offboard", "Offboard"),
        Binding("g", "revoke", "Revoke certs"),
        Binding("right_square_bracket,left_square_bracket", "switch_tab", "Other tab",
                key_display="]"),
        Binding("enter", "detail", "Detail", key_display="⏎"),
        Binding("slash", "filter_list", "Filter", key_display="/"),
    ]
    AUTO_FOCUS = "#human-table"

    def __init__(self) -> None:
        super().__init__()
        self._users: dict[str, UserView] = {}
        self._machines: dict[str, MachineView] = {}
        self._certificates: Counter[str] = Counter()

    def compose_section(self) -> ComposeResult:
        with TabbedContent(id="identities", initial=HUMANS):
            with TabPane("Humans", id=HUMANS):
                yield LiveTable("Name", "Groups", "Status", "Factors", id="human-table")
            with TabPane("Machines", id=MACHINES):
                yield LiveTable("Name", "Kind", "Status", "Owner / tech owner", "Review by",
                                "Certs", "Scope", id="machine-table")  # fmt: skip

    # -- data ------------------------------------------------------------------

    def load(self) -> IdentitiesData:
        actions = self.actions
        outstanding = actions.outstanding_certificates()
        return IdentitiesData(
            actions.users(),
            actions.machines(),
            Counter(certificate.nhi for certificate in outstanding),
        )

    def show(self, data: object) -> None:
        assert isinstance(data, IdentitiesData)
        now = datetime.now(UTC)
        self._users = {user.name: user for user in data.users}
        self._machines = {machine.name: machine for machine in data.machines}
        self._certificates = data.certificates
        self.query_one("#human-table", LiveTable).refill([human_row(u) for u in data.users])
        self.query_one("#machine-table", LiveTable).refill(
            [machine_row(m, data.certificates[m.name], now) for m in data.machines]
        )

    @property
    def tab(self) -> str:
        """The active tab: HUMANS or MACHINES."""
        return self.query_one("#identities", TabbedContent).active

    def on_tabbed_content_tab_activated(self, event: TabbedContent.TabActivated) -> None:
        event.stop()
        self.refresh_bindings()  # the footer offers the new tab's actions

    # -- actions ---------------------------------------------------------------

    def on_data_table_row_selected(self, event: DataTable.RowSelected) -> None:
        event.stop()
        self.action_detail()

    def action_detail(self) -> None:
        """Everything about the highlighted identity of the active tab."""
        if not self.allowed:
            return
        if self.tab == HUMANS:
            user = self._users.get(self.query_one("#human-table", LiveTable).selected_key or "")
            if user is not None:
                self.app.push_screen(DetailDialog(f"User {user.name}", user_facts(user)))
                return
        else:
            table = self.query_one("#machine-table", LiveTable)
            machine = self._machines.get(table.selected_key or "")
            if machine is not None:
                facts = machine_facts(machine, self._certificates[machine.name])
                self.app.push_screen(DetailDialog(f"Machine identity {machine.name}", facts))
                return
        self._say("Nothing is selected.", "warning")

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action == "switch_tab" or any(action in names for names in TAB_ACTIONS.values()):
            # Someone who sees the missing-role message is offered nothing.
            if self.console.user is None or not self.allowed:
                return False
            return action == "switch_tab" or action in TAB_ACTIONS[self.tab]
        return True

    def action_switch_tab(self) -> None:
        tabs = self.query_one("#identities", TabbedContent)
        tabs.active = MACHINES if self.tab == HUMANS else HUMANS
        table = "#machine-table" if tabs.active == MACHINES else "#human-table"
        self.query_one(table, LiveTable).focus()

    def _say(
        self, message: str, severity: SeverityLevel = "information", timeout: float = 5
    ) -> None:
        """Notify; names come from the database, so the text is never read as markup."""
        self.notify(message, severity=severity, timeout=timeout, markup=False)

    def _selected(self, table_id: str, kind: str, to_do: str) -> str | None:
        """The selected row's name, if the user is an admin and a row is selected."""
        if not self.can(Role.ADMIN, to_do):
            return None
        name = self.query_one(table_id, LiveTable).selected_key
        if name is None:
            self._say(f"No {kind} is selected.", "warning")
        return name

    def _confirm_name(self, question: str, name: str, then: Callable[[], None]) -> None:
        """Ask the admin to type ``name``; call ``then`` only if they typed it exactly."""

        def typed(answer: str | None) -> None:
            if answer is None:
                return
            if answer != name:
                self._say(f"You typed {answer!r}, not {name!r}: nothing was changed.", "warning")
                return
            then()

        self._ask(TextDialog(f"{question} Type {name} to confirm:", placeholder=name), typed)

    def _ask_reason(self, question: str, then: Callable[[str], None]) -> None:
        """Ask for a reason (required: it goes into the audit trail); ``then`` gets it."""

        def answered(reason: str | None) -> None:
            if reason is not None:
                then(reason)

        self._ask(TextDialog(question, placeholder="reason (required)", required=True), answered)

    def _ask(self, dialog: TextDialog, answered: Callable[[str | None], None]) -> None:
        # The class lets the stylesheet wrap long questions instead of cutting them off.
        dialog.add_class("identities-dialog")
        self.app.push_screen(dialog, answered)

    # humans

    def _human(self, to_do: str) -> UserView | None:
        name = self._selected("#human-table", "user", to_do)
        return None if name is None else self._users.get(name)

    def action_enable(self) -> None:
        self._set_disabled(False)

    def action_disable(self) -> None:
        self._set_disabled(True)

    def _set_disabled(self, disabled: bool) -> None:
        verb = "disable" if disabled else "enable"
        user = self._human(f"{verb} users")
        if user is None:
            return
        if user.disabled == disabled:
            self._say(f"{user.name} is {verb}d already.")
            return
        if disabled and user.name == self.user.name:
            # Said before the question; the domain refuses it (and audits that) anyway.
            self._say("You cannot disable yourself: another admin must.", "warning")
            return

        def change(reason: str) -> None:
            self.run_service(
                lambda: self.actions.set_user_disabled(user.name, disabled, reason=reason),
                lambda _: self._say(f"{user.name} is {verb}d."),
            )

        effect = (
            "They cannot sign in, and their live sessions and consoles end within 2 s."
            if disabled else "They can sign in again."
        )  # fmt: skip
        self._ask_reason(f"{verb.capitalize()} {user.name}? {effect} Reason:", change)

    def action_reset_mfa(self) -> None:
        user = self._human("reset second factors")
        if user is None:
            return
        def reset() -> None:
            self.run_service(
                lambda: self.actions.reset_mfa(user.name),
                lambda enrolment: self.app.push_screen(EnrolmentDialog(enrolment)),
            )

        question = f"Reset the second factor of {user.name}? Their codes stop working at once."
        self._confirm_name(question, user.name, reset)

    # machines

    def _machine(self, to_do: str, *, allowed: tuple[str, ...]) -> MachineView | None:
        """The selected NHI if the user is an admin and its status is one of ``allowed``."""
        name = self._selected("#machine-table", "machine identity", to_do)
        machine = None if name is None else self._machines.get(name)
        if machine is not None and machine.status not in allowed:
            # Said before any question is asked; the service checks again when it acts.
            self._say(f"{machine.name} is {machine.status}: you cannot {to_do} in that state.",
                      "warning")  # fmt: skip
            return None
        return machine

    def action_suspend(self) -> None:
        effect = "It cannot log in, join or renew until it is resumed."
        self._change_status("active", "suspended", "suspend", effect)

    def action_resume(self) -> None:
        self._change_status("suspended", "active", "resume", "It can log in again.")

    def _change_status(self, before: str, after: str, verb: str, effect: str) -> None:
        machine = self._machine(f"{verb} machine identities", allowed=(before,))
        if machine is None:
            return
        def change(reason: str) -> None:
            self.run_service(
                lambda: self.actions.set_machine_status(machine.name, after, reason),
                lambda view: self._say(f"{view.name} is {view.status}."),
            )

        self._ask_reason(f"{verb.capitalize()} {machine.name}? {effect} Reason:", change)

    def action_offboard(self) -> None:
        machine = self._machine("offboard machine identities", allowed=("active", "suspended"))
        if machine is None:
            return
        def offboarded(revoked: list[Revocation]) -> None:
            count = len(revoked)
            message = f"{machine.name} is offboarded; {count} certificate(s) revoked."
            self._say(f"{message} {PUBLISH_KRL}", timeout=10)

        def offboard(reason: str) -> None:
            self.run_service(
                lambda: self.actions.offboard_machine(machine.name, reason),
                offboarded,
            )

        self._confirm_name(
            f"Offboard {machine.name} for good? Its join tokens and certificates are revoked "
            "and the name cannot be used again.",
            machine.name,
            lambda: self._ask_reason(f"Why is {machine.name} offboarded?", offboard),
        )

    def action_revoke(self) -> None:
        # Offboarded too: a certificate replaced by a renewal may still be out there.
        machine = self._machine("revoke machine certificates", allowed=STATUSES)
        if machine is None:
            return
        count = self._certificates[machine.name]

        def revoked(entries: list[Revocation]) -> None:
            if entries:
                message = f"Revoked {len(entries)} certificate(s) of {machine.name}."
                self._say(f"{message} {PUBLISH_KRL}", timeout=10)
            else:
                self._say(f"{machine.name} had no certificate left to revoke.")

        def revoke(reason: str) -> None:
            self.run_service(
                lambda: self.actions.revoke_machine(machine.name, reason),
                revoked,
            )

        self._ask_reason(
            f"Revoke all {count} outstanding certificate(s) of {machine.name}, and any copies "
            "replaced by renewals? Reason:",
            revoke,
        )
