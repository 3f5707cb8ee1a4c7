"""Login-name parsing and the group allow-list (no sockets)."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from gateway.config import load_config
from gateway.domain.access import AccessResolver, LoginName, parse_login_name, user_part
from gateway.domain.policy import Policy
from gateway.errors import AccessDenied, DestinationSyntaxError, UnknownAccount, UnknownTarget
from tests.test_config import HOST_KEY


@pytest.mark.parametrize(
    ("login", "parsed"),
    [
        ("alice", LoginName("alice", None, None)),
        ("alice:web01", LoginName("alice", "web01", None)),
        ("alice:root@web01", LoginName("alice", "web01", "root")),
        ("a.b-c_d:x.y@db-1.prod", LoginName("a.b-c_d", "db-1.prod", "x.y")),
    ],
)
def test_parse_login_name(login: str, parsed: LoginName) -> None:
    assert parse_login_name(login) == parsed


@pytest.mark.parametrize(
    "login",
    [
        "",
        ":web01",
        "alice:",
        "alice:@web01",
        "alice:root@",
        "alice:a@b@c",
        "al ice:web01",
        "alice:web01;rm",
        "alice:$(id)",
        "x" * 300,
        "alice:\x1b[2Jweb01",
        "alice:wéb01",
    ],
)
def test_malformed_login_names_are_rejected(login: str) -> None:
    with pytest.raises(DestinationSyntaxError):
        parse_login_name(login)


def test_user_part() -> None:
    assert user_part("alice:root@web01") == "alice"
    assert user_part("alice") == "alice"


@pytest.fixture()
def access(tmp_path: Path) -> AccessResolver:
    path = tmp_path / "pamgate.toml"
    path.write_text(
        f"""
[[targets]]
name = "web01"
host = "10.0.0.1"
accounts = ["deploy", "root"]
host_keys = ["{HOST_KEY}"]

[[targets]]
name = "db01"
host = "10.0.0.2"
accounts = ["postgres"]
host_keys = ["{HOST_KEY}"]

[[rules]]
id = "ops-web"
groups = ["ops", "dba"]
targets = ["web01"]
mode = "allow"

[[rules]]
id = "dba-db"
groups = ["dba"]
targets = ["db01"]
mode = "allow"
"""
    )
    config = load_config(path)
    return AccessResolver(config, Policy(config))


NOW = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)


def test_authorize_default_and_named_account(access: AccessResolver) -> None:
    default = access.authorize("al", ("ops",), "web01", None, source="10.1.1.1", at=NOW)
    assert (default.target.name, default.account) == ("web01", "deploy")
    assert default.authority == "policy:ops-web"
    assert (
        access.authorize("al", ("ops",), "web01", "root", source="10.1.1.1", at=NOW).account
        == "root"
    )


def test_authorize_refusals(access: AccessResolver) -> None:
    with pytest.raises(UnknownTarget, match="Targets you may reach: web01"):
        access.authorize("al", ("ops",), "nosuch", None, source="10.1.1.1", at=NOW)
    with pytest.raises(AccessDenied, match="no rule"):
        access.authorize("al", ("ops",), "db01", None, source="10.1.1.1", at=NOW)
    with pytest.raises(UnknownAccount, match="Accounts: deploy, root"):
        access.authorize("al", ("ops",), "web01", "admin", source="10.1.1.1", at=NOW)
    with pytest.raises(AccessDenied):
        access.authorize("al", (), "web01", None, source="10.1.1.1", at=NOW)


def test_reachable_targets(access: AccessResolver) -> None:
    assert [t.name for t in access.reachable_targets("al", ("dba",))] == ["web01", "db01"]
    assert access.reachable_targets("al", ("visitors",)) == []
