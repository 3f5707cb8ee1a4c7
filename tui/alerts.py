"""What waits for the on-call approver: pending requests and break-glass uses nobody reviewed.

Read for the badge every screen's sections bar carries (and the lock screen
shows as a count), and compared with the previous read so each new request
or break-glass use rings the terminal bell and raises a toast, whatever
screen the operator is on. Plain data: the console reads it in a worker.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from gateway.domain.approvals import RequestView
from gateway.domain.breakglass import CaseView
from gateway.domain.operators import OperatorActions, RoleMissing


@dataclass(frozen=True)
class Waiting:
    """Requests the operator could decide (not their own) and break-glass cases unreviewed."""

    requests: tuple[RequestView, ...] = ()
    cases: tuple[CaseView, ...] = ()
    #: False until the first read: nothing is announced as new before it.
    known: bool = False

    @classmethod
    def read(cls, actions: OperatorActions, operator: str) -> Waiting:
        """What waits now; a section the operator may not see counts as nothing waiting."""
        try:
            requests = tuple(r for r in actions.pending_requests() if r.user != operator)
        except RoleMissing:
            requests = ()
        try:
            cases = tuple(actions.breakglass_cases(unreviewed=True))
        except RoleMissing:
            cases = ()
        return cls(requests, cases, known=True)

    def news(self, before: Waiting) -> Announcements:
        """What arrived since ``before`` (nothing if ``before`` was never read)."""
        if not before.known:
            return Announcements()
        old_requests = {r.id for r in before.requests}
        old_cases = {c.id for c in before.cases}
        return Announcements(
            [r for r in self.requests if r.id not in old_requests],
            [c for c in self.cases if c.id not in old_cases],
        )

    def badge(self) -> str:
        """``2 req 1 bg`` for the sections bar, or empty when nothing waits."""
        parts = []
        if self.requests:
            parts.append(f"{len(self.requests)} req")
        if self.cases:
            parts.append(f"{len(self.cases)} bg")
        return " ".join(parts)

    def sentence(self) -> str:
        """The lock screen's line: counts only, nothing about who or where."""
        parts = []
        if self.requests:
            count = len(self.requests)
            parts.append(f"{count} access request{'s' * (count != 1)} waiting")
        if self.cases:
            count = len(self.cases)
            parts.append(f"{count} break-glass use{'s' * (count != 1)} to review")
        return "; ".join(parts) + "." if parts else ""


@dataclass
class Announcements:
    """New arrivals to announce."""

    requests: list[RequestView] = field(default_factory=list)
    cases: list[CaseView] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.requests or self.cases)

    def messages(self, *, detailed: bool) -> list[tuple[str, str]]:
        """(title, text) per toast; ``detailed`` False (a locked console) gives counts only."""
        if not detailed:
            return [("Waiting", Waiting(tuple(self.requests), tuple(self.cases)).sentence())]
        toasts = [
            (f"New request #{r.id}",
             f"{r.user} wants {r.account}@{r.target} for {r.duration_seconds // 60} min: "
             f"{r.reason}  (1 Requests, a approve)")
            for r in self.requests
        ]  # fmt: skip
        toasts += [
            (f"BREAK-GLASS #{c.id}",
             f"{c.user} used break-glass on {c.account}@{c.target}: {c.justification}  "
             "(3 Break-glass)")
            for c in self.cases
        ]  # fmt: skip
        return toasts
