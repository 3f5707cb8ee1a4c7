"""The policy matrix: rule matching and precedence, without sockets."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from gateway.config import load_config
from gateway.domain.policy import AccessContext, Mode, Policy
from gateway.errors import ConfigError
from tests.support.config import HOST_KEY

TARGETS = f"""
[[targets]]
name = "web01"
host = "10.0.0.1"
accounts = ["deploy", "root"]
labels = ["prod"]
host_keys = ["{HOST_KEY}"]

[[targets]]
name = "dev01"
host = "10.0.0.2"
accounts = ["deploy"]
host_keys = ["{HOST_KEY}"]

[target_groups]
web = ["web01", "dev01"]
"""

RULES = """
[[rules]]
id = "ops-deploy"
groups = ["ops"]
targets = ["group:web"]
accounts = ["deploy"]
mode = "allow"

[[rules]]
id = "ops-root-prod"
groups = ["ops"]
targets = ["label:prod"]
accounts = ["root"]
mode = "approval"
approver_groups = ["leads"]
approvals_required = 2
hours = "06:00-20:00"
days = ["mon", "tue", "wed", "thu", "fri"]
sources = ["10.0.0.0/8"]

[[rules]]
id = "night-owls"
groups = ["ops"]
targets = ["web01"]
accounts = ["root"]
mode = "allow"
hours = "22:00-02:00"

[[rules]]
id = "no-contractors"
groups = ["contractors"]
targets = ["*"]
mode = "deny"

[[rules]]
id = "everyone-dev"
groups = ["*"]
targets = ["dev01"]
mode = "allow"
"""

ALLOW_WEB = 'id = "r"\ngroups = ["ops"]\ntargets = ["web01"]\nmode = "allow"\n'
MONDAY_NOON = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)


@pytest.fixture()
def policy(tmp_path: Path) -> Policy:
    path = tmp_path / "pamgate.toml"
    path.write_text(TARGETS + RULES)
    return Policy(load_config(path))


def decide(
    policy: Policy,
    groups: tuple[str, ...],
    target: str,
    account: str,
    source: str = "10.1.2.3",
    at: datetime = MONDAY_NOON,
) -> tuple[Mode, str | None]:
    decision = policy.evaluate(AccessContext("u", groups, target, account, source, at))
    return decision.mode, decision.rule_id


@pytest.mark.parametrize(
    ("groups", "target", "account", "source", "at", "expected"),
    [
        (("ops",), "web01", "deploy", "10.1.2.3", MONDAY_NOON, (Mode.ALLOW, "ops-deploy")),
        (("ops",), "web01", "root", "10.1.2.3", MONDAY_NOON, (Mode.APPROVAL, "ops-root-prod")),
        # Outside the approval rule's network, day or hours: no rule applies.
        (("ops",), "web01", "root", "192.168.1.1", MONDAY_NOON, (Mode.DENY, None)),
        (
            ("ops",),
            "web01",
            "root",
            "10.1.2.3",
            datetime(2026, 11, 22, 12, tzinfo=UTC),
            (Mode.DENY, None),
        ),
        (
            ("ops",),
            "web01",
            "root",
            "10.1.2.3",
            datetime(2026, 11, 23, 21, tzinfo=UTC),
            (Mode.DENY, None),
        ),
        # A window that wraps midnight.
        (
            ("ops",),
            "web01",
            "root",
            "192.168.1.1",
            datetime(2026, 11, 23, 23, tzinfo=UTC),
            (Mode.ALLOW, "night-owls"),
        ),
        (
            ("ops",),
            "web01",
            "root",
            "192.168.1.1",
            datetime(2026, 11, 24, 1, 59, tzinfo=UTC),
            (Mode.ALLOW, "night-owls"),
        ),
        # Deny wins over allow, even a wildcard allow.
        (
            ("contractors",),
            "dev01",
            "deploy",
            "10.1.2.3",
            MONDAY_NOON,
            (Mode.DENY, "no-contractors"),
        ),
        (
            ("contractors", "ops"),
            "web01",
            "deploy",
            "10.1.2.3",
            MONDAY_NOON,
            (Mode.DENY, "no-contractors"),
        ),
        # Allow wins over approval; wildcard groups.
        (("visitors",), "dev01", "deploy", "10.1.2.3", MONDAY_NOON, (Mode.ALLOW, "everyone-dev")),
        (("visitors",), "web01", "deploy", "10.1.2.3", MONDAY_NOON, (Mode.DENY, None)),
        (("ops",), "nosuch", "deploy", "10.1.2.3", MONDAY_NOON, (Mode.DENY, None)),
        (("ops",), "web01", "root", "not-an-ip", MONDAY_NOON, (Mode.DENY, None)),
    ],
)
def test_policy_matrix(
    policy: Policy,
    groups: tuple[str, ...],
    target: str,
    account: str,
    source: str,
    at: datetime,
    expected: tuple[Mode, str | None],
) -> None:
    assert decide(policy, groups, target, account, source, at) == expected


def test_decision_names_its_rule_as_authority(policy: Policy) -> None:
    decision = policy.evaluate(
        AccessContext("u", ("ops",), "web01", "deploy", "10.0.0.9", MONDAY_NOON)
    )
    assert decision.authority == "policy:ops-deploy"
    denied = policy.evaluate(AccessContext("u", (), "web01", "deploy", "10.0.0.9", MONDAY_NOON))
    assert denied.authority == "policy:no-rule"


@pytest.mark.parametrize(
    ("rule", "message"),
    [
        (
            'id = "r"\ngroups = ["ops"]\ntargets = ["nope"]\nmode = "allow"',
            "target 'nope' matches nothing",
        ),
        ('id = "r"\ngroups = ["ops"]\ntargets = ["group:none"]\nmode = "allow"', "matches nothing"),
        (
            'id = "r"\ngroups = ["ops"]\ntargets = ["web01"]\nmode = "approval"',
            "needs approver_groups",
        ),
        (
            ALLOW_WEB + 'sources = ["10.0.0.0/33"]',
            "is not a CIDR",
        ),
        (
            ALLOW_WEB + 'hours = "25:00-26:00"',
            "not a time of day",
        ),
        ('id = "r"\ngroups = ["ops"]\ntargets = ["web01"]\nmode = "sometimes"', "rules[0].mode"),
        (
            'id = "r"\ngroups = ["ops"]\ntargets = ["web01"]\nmode = "allow"\nmax_duration = "1h"\n'
            'default_duration = "2h"',
            "longer than max_duration",
        ),
    ],
)
def test_bad_rules_are_reported(tmp_path: Path, rule: str, message: str) -> None:
    path = tmp_path / "pamgate.toml"
    path.write_text(TARGETS + "\n[[rules]]\n" + rule + "\n")
    with pytest.raises(ConfigError, match="pamgate.toml") as caught:
        load_config(path)
    assert message in str(caught.value)


def test_old_allowed_groups_key_explains_the_replacement(tmp_path: Path) -> None:
    path = tmp_path / "pamgate.toml"
    path.write_text(TARGETS.replace('labels = ["prod"]', 'allowed_groups = ["ops"]'))
    with pytest.raises(ConfigError, match=r"allowed_groups was replaced by \[\[rules\]\]"):
        load_config(path)
