"""Unauthenticated-connection limits (sshd's MaxStartups and PerSourceMaxStartups), no sockets."""

from __future__ import annotations

import pytest

from gateway.config import ListenerSettings
from gateway.domain.lockout import source_key
from gateway.ssh.startups import StartupLimiter, StartupLimits


def limiter(start: int, rate: int, full: int, per_source: int, chance: float) -> StartupLimiter:
    return StartupLimiter("human", StartupLimits(start, rate, full, per_source), source_key,
                          chance=lambda: chance)  # fmt: skip


def test_drop_probability_is_sshds_staircase() -> None:
    limits = limiter(10, 30, 100, 100, 0.0)
    assert [limits.drop_probability(n) for n in (0, 9, 10, 11, 12, 55, 99, 100, 500)] == [
        0.0, 0.0, 0.30, 0.30, 0.31, 0.65, 0.99, 1.0, 1.0,
    ]  # fmt: skip
    assert limiter(5, 100, 50, 50, 0.0).drop_probability(5) == 1.0


def test_random_early_drop_between_start_and_full() -> None:
    unlucky = limiter(2, 50, 4, 10, chance=0.49)  # below the 50 % at start: dropped
    assert unlucky.admit("10.0.0.1") == unlucky.admit("10.0.0.2") == ""
    assert "max_startups" in unlucky.admit("10.0.0.3")
    lucky = limiter(2, 50, 4, 10, chance=0.99)
    for host in range(4):
        assert lucky.admit(f"10.0.0.{host}") == ""
    assert "max_startups" in lucky.admit("10.0.0.9")  # full: always
    lucky.release("10.0.0.0")
    assert lucky.unauthenticated == 3
    assert lucky.admit("10.0.0.9") == ""


def test_per_source_cap_counts_ipv6_networks() -> None:
    limits = limiter(100, 30, 200, 2, 0.99)
    assert limits.admit("2001:db8::1") == limits.admit("2001:db8::2") == ""
    assert "from 2001:db8::/64" in limits.admit("2001:db8::3")
    assert limits.admit("2001:db8:1::1") == ""
    limits.release("2001:db8::2")
    assert limits.admit("2001:db8::3") == ""


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"max_startups": "10:30"}, "String should match pattern"),
        ({"max_startups": "30:10:10"}, "1 <= start <= full"),
        ({"max_startups": "10:130:20"}, "rate is a percentage"),
        ({"max_sessions": 0}, "greater than or equal to 1"),
        ({"login_grace_time_seconds": 0}, "greater than 0"),
    ],
)
def test_listener_limits_are_validated(settings: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        ListenerSettings.model_validate({"port": 2222, **settings})
    assert ListenerSettings(port=1, max_startups="7").startups == (7, 100, 7)
