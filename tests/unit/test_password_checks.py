"""The queue of password checks: a person's usual address first, failing addresses last."""

from __future__ import annotations

import threading

from gateway.domain.password_checks import PasswordChecks


def test_known_good_and_clean_sources_go_before_failing_ones() -> None:
    checks = PasswordChecks(workers=1)
    checks.signed_in_from("10.0.0.1", when=100.0)
    gate = threading.Event()
    ran: list[str] = []
    blocker = checks.submit((0.0,), gate.wait)  # holds the only worker
    queued = [
        checks.submit(checks.priority("203.0.113.9", 12, since=0.0), lambda: ran.append("flood")),
        checks.submit(checks.priority("198.51.100.7", 3, since=0.0), lambda: ran.append("new")),
        checks.submit(checks.priority("10.0.0.1", 40, since=0.0), lambda: ran.append("usual")),
        checks.submit(checks.priority("10.0.0.1", 0, since=200.0), lambda: ran.append("stale")),
    ]
    gate.set()
    for future in [blocker, *queued]:
        future.result(timeout=10)
    # The usual address first (however many failures it has), then by failures.
    assert ran == ["usual", "stale", "new", "flood"]


def test_a_cancelled_check_never_runs_and_errors_reach_the_caller() -> None:
    checks = PasswordChecks(workers=1)
    gate = threading.Event()
    ran: list[str] = []
    blocker = checks.submit((0.0,), gate.wait)
    dropped = checks.submit((1.0,), lambda: ran.append("dropped"))
    assert dropped.cancel()
    failing = checks.submit((1.0,), lambda: 1 / 0)
    gate.set()
    blocker.result(timeout=10)
    try:
        failing.result(timeout=10)
    except ZeroDivisionError:
        pass
    else:
        raise AssertionError("the error did not reach the caller")
    assert ran == []
