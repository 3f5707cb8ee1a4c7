"""Break-glass rules against a real store, with an injected clock; webhooks that fail."""

from __future__ import annotations

import json
import threading
import time

import pytest

from gateway.config import ApprovalSettings, RuleSettings
from gateway.domain.alerts import ATTEMPTS, WebhookAlerts, WebhookDelivery
from gateway.domain.audit.trail import AuditLog, Trail
from gateway.domain.breakglass import BreakGlass, BreakGlassError
from gateway.domain.identities import UserDirectory
from gateway.store.database import Store
from tests.support.clock import Clock
from tests.support.secrets import test_secret_box

RULE = RuleSettings(
    id="r", groups=["ops"], targets=["*"], mode="approval", approver_groups=["leads"],
    break_glass=True, break_glass_max_duration="30m",
)  # fmt: skip
WHY = "database down, customers cannot pay"


@pytest.fixture()
def breakglass(store: Store) -> tuple[BreakGlass, Clock]:
    clock = Clock()
    audit = AuditLog(store, clock=clock)
    users = UserDirectory(store, audit, secret_box=test_secret_box(), clock=clock)
    for name, groups in (("alice", ["ops"]), ("rita", ["auditors"]), ("olga", ["ops"])):
        users.add_user(name, actor="root", groups=groups, password="a long password")
    service = BreakGlass(store, audit, WebhookAlerts([], audit), ApprovalSettings(), clock=clock)
    return service, clock


def test_invoke_needs_eligibility_and_a_justification(breakglass) -> None:
    service, _ = breakglass
    with pytest.raises(BreakGlassError, match="at least 20 characters"):
        service.invoke(user="alice", target="db", account="root", rule=RULE, justification="urgent",
                       source="10.0.0.1")  # fmt: skip
    ineligible = RULE.model_copy(update={"break_glass": False})
    with pytest.raises(BreakGlassError, match="does not allow break-glass"):
        service.invoke(user="alice", target="db", account="root", rule=ineligible,
                       justification=WHY, source="10.0.0.1")  # fmt: skip
    case, grant = service.invoke(user="alice", target="db", account="root", rule=RULE,
                                 justification=WHY, source="10.0.0.1")  # fmt: skip
    assert grant.authority == f"breakglass:{case.id}"
    assert (grant.ends_at - grant.starts_at).total_seconds() == 30 * 60


def test_review_rules_and_overdue(breakglass) -> None:
    service, clock = breakglass
    case, _ = service.invoke(user="alice", target="db", account="root", rule=RULE,
                             justification=WHY, source="10.0.0.1")  # fmt: skip
    assert [c.id for c in service.list(unreviewed=True)] == [case.id]
    assert service.list(overdue=True) == []
    clock.now += 25 * 3600
    assert [c.id for c in service.list(overdue=True)] == [case.id]
    with pytest.raises(BreakGlassError, match="your own"):
        service.review(case.id, "alice", "justified", "fine by me")
    with pytest.raises(BreakGlassError, match="not in a reviewer group"):
        service.review(case.id, "olga", "justified", "she asked me")
    with pytest.raises(BreakGlassError, match="verdict must be"):
        service.review(case.id, "rita", "maybe", "hmm")
    reviewed = service.review(case.id, "rita", "unjustified", "could have waited for approval")
    assert (reviewed.verdict, reviewed.reviewed_by) == ("unjustified", "rita")
    with pytest.raises(BreakGlassError, match="reviewed already"):
        service.review(case.id, "rita", "justified", "changed my mind")
    assert service.list(unreviewed=True) == []


def test_failing_webhook_never_blocks_and_is_audited(store: Store) -> None:
    audit = AuditLog(store)
    alerts = WebhookAlerts(["http://127.0.0.1:9/unreachable"], audit)
    started = time.monotonic()
    alerts.send("breakglass.invoked", {"case": 1}, authority="breakglass:1")
    assert time.monotonic() - started < 0.5
    clock = [1000.0]
    delivery = WebhookDelivery(store, audit, clock=lambda: clock[0])
    tries = 0
    while delivery.pending():
        tries += delivery.deliver_due()
        clock[0] += 10  # past every backoff
        assert tries <= ATTEMPTS
    assert tries == ATTEMPTS
    failed = [r for r in audit.events(Trail.HUMAN) if r.action == "alert.failed"]
    assert len(failed) == 1
    assert failed[0].authority == "breakglass:1"
    assert json.loads(failed[0].details)["attempts"] == ATTEMPTS


def test_alerts_wait_in_the_outbox_and_each_is_delivered_once(store: Store) -> None:
    """An alert raised by a process that exits at once (the CLI) is delivered later by a
    running node; two nodes draining the same outbox post it once."""
    audit = AuditLog(store)
    WebhookAlerts(["http://hooks.example/a", "http://hooks.example/b"], audit).send(
        "request.created", {"request": 7}, authority="request:7"
    )  # and the sender is gone
    posted: list[tuple[str, dict[str, object]]] = []
    lock = threading.Lock()

    def post(url: str, data: bytes) -> int:
        with lock:
            posted.append((url, json.loads(data)))
        time.sleep(0.05)  # long enough for the other node to try the same alert
        return 204

    nodes = [WebhookDelivery(store, audit, post=post) for _ in range(2)]
    threads = [threading.Thread(target=node.deliver_due) for node in nodes]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(url for url, _ in posted) == ["http://hooks.example/a", "http://hooks.example/b"]
    assert all(body["kind"] == "request.created" and body["request"] == 7 for _, body in posted)
    sent = [r for r in audit.events(Trail.HUMAN) if r.action == "alert.sent"]
    assert len(sent) == 2 and {r.authority for r in sent} == {"request:7"}
    assert nodes[0].pending() == 0


