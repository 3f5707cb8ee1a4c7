"""The lane's session watch: one round of queries for every live session, failing closed."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from gateway.domain.live_checks import LiveChecks, WatchSubject
from gateway.domain.machines.registry import ScopeTarget
from gateway.domain.sessions import SessionStart
from gateway.errors import StoreError
from gateway.services import GatewayServices
from gateway.ssh import watch as session_watch
from gateway.ssh.watch import SessionWatch
from tests.support.console import add_person, console_services


@pytest.fixture()
def services(tmp_path: Path) -> Iterator[GatewayServices]:
    opened = console_services(tmp_path)
    yield opened
    opened.close()


def open_session(services: GatewayServices, session_id: str, user: str) -> None:
    start = SessionStart(lane="human", user=user, target="web01", account="root",
                         source="192.0.2.7", authority="rule:ops", kind="shell")  # fmt: skip
    services.ledger.open(session_id, start, recording_path=None)


def test_live_checks_read_what_changed_for_each_subject(services: GatewayServices) -> None:
    for name in ("alice", "bob", "carol"):
        add_person(services, name, "ops", "approvers")
    services.users.set_disabled("bob", True, actor="tests")
    open_session(services, "s-alice", "alice")
    open_session(services, "s-carol", "carol")
    services.ledger.request_termination("s-carol", actor="bob", reason="wrong host")
    rule = services.config.rules[0]
    kept, revoked = (
        services.requests.approve(
            services.requests.create(user="alice", target="web01", account="root", rule=rule,
                                     reason="work", source="10.0.0.1").id,
            "carol",
        ).grant_id
        for _ in range(2)
    )  # fmt: skip
    services.requests.revoke(revoked, "carol", "incident 42")
    services.machines.add(
        "backup-bot", actor="tests", kind="service-account", owner="o", tech_owner="t",
        purpose="p", targets=[ScopeTarget("web01", "root")], commands=["uptime"],
    )  # fmt: skip
    services.machines.add(
        "deploy-bot", actor="tests", kind="ci-pipeline", owner="o", tech_owner="t",
        purpose="p", targets=[ScopeTarget("web01", "root")], commands=["uptime"],
    )  # fmt: skip
    services.machines.set_status("deploy-bot", "suspended", actor="tests", reason="leak")

    checks = services.live_checks.read([
        WatchSubject("s-alice", user="alice", grant_id=kept),
        WatchSubject("s-carol", user="carol", grant_id=revoked),
        WatchSubject(None, user="bob"),
        WatchSubject(None, user="nobody-any-more"),
        WatchSubject("s-bot", nhi="backup-bot"),
        WatchSubject("s-deploy", nhi="deploy-bot"),
    ])  # fmt: skip
    assert checks.terminations == {"s-carol": "terminated by bob: wrong host"}
    assert checks.disabled_users == {"bob", "nobody-any-more"}
    assert checks.revoked_grants == {revoked: "incident 42"}
    assert {name: nhi.status for name, nhi in checks.machines.items()} == {
        "backup-bot": "active", "deploy-bot": "suspended"
    }
    assert services.live_checks.read([]) == LiveChecks()


@dataclass(eq=False)
class FakeSession:
    """A live session as the watch sees it; records why it was ended."""

    subject: WatchSubject
    revoke_when: set[str] = field(default_factory=set)
    time_up: str | None = None
    ended: list[str] = field(default_factory=list)
    rounds: int = 0

    @property
    def watch_subject(self) -> WatchSubject:
        return self.subject

    @property
    def watch_finished(self) -> bool:
        return bool(self.ended)

    def check_time(self) -> str | None:
        return self.time_up

    def ended_because(self, checks: LiveChecks) -> str | None:
        self.rounds += 1
        if self.subject.user in checks.disabled_users & self.revoke_when:
            return f"user {self.subject.user} was disabled; the session was closed"
        return None

    def terminate(self, reason: str) -> None:
        self.ended.append(reason)


async def wait_until(condition, timeout: float = 5.0) -> None:  # noqa: ANN001
    deadline = asyncio.get_running_loop().time() + timeout
    while not condition():
        assert asyncio.get_running_loop().time() < deadline, "timed out"
        await asyncio.sleep(0.01)


async def test_one_round_ends_only_the_sessions_it_concerns(
    services: GatewayServices, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(session_watch, "WATCH_INTERVAL", 0.02)
    add_person(services, "alice", "ops")
    add_person(services, "bob", "ops")
    tasks: list[asyncio.Task] = []
    watch = SessionWatch(services, tasks.append)
    alice = FakeSession(WatchSubject("s1", user="alice"), revoke_when={"alice"})
    bob = FakeSession(WatchSubject("s2", user="bob"), revoke_when={"bob"})
    late = FakeSession(WatchSubject("s3", user="bob"), time_up="grant #3 has ended")
    for session in (alice, bob, late):
        watch.add(session)
    assert len(tasks) == 1  # one loop for the lane, however many sessions

    await wait_until(lambda: late.ended and alice.rounds >= 2)
    assert late.ended == ["grant #3 has ended"] and not alice.ended and not bob.ended
    services.users.set_disabled("bob", True, actor="tests")
    await wait_until(lambda: bob.ended)
    assert bob.ended == ["user bob was disabled; the session was closed"]
    assert not alice.ended and len(watch) == 1

    watch.discard(alice)
    await asyncio.wait_for(tasks[0], 1)  # nothing left to watch: the loop ends
    watch.add(alice)
    assert len(tasks) == 2 and not tasks[1].done()
    watch.stop()
    await asyncio.gather(tasks[1], return_exceptions=True)
    assert tasks[1].cancelled()


async def test_sessions_end_when_access_cannot_be_checked(
    services: GatewayServices, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(session_watch, "WATCH_INTERVAL", 0.01)
    monkeypatch.setattr(session_watch, "MAX_FAILED_ROUNDS", 5)
    watch = SessionWatch(services, lambda task: None)
    sessions = [FakeSession(WatchSubject(f"s{n}", user="alice")) for n in range(3)]
    for session in sessions:
        watch.add(session)
    await wait_until(lambda: all(s.rounds >= 1 for s in sessions))

    def unreachable(session_ids: object) -> dict[str, str]:
        raise StoreError("database is locked")

    monkeypatch.setattr(services.ledger, "termination_requests", unreachable)
    await wait_until(lambda: all(s.ended for s in sessions))
    assert {s.ended[0] for s in sessions} == {
        "cannot check that access is still allowed (database is locked)"
    }
