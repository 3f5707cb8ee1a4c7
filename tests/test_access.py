"""Login-name parsing and the group allow-list (no sockets)."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.access import AllowList, LoginName, parse_login_name, user_part
from gateway.config import load_config
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
def allow_list(tmp_path: Path) -> AllowList:
    path = tmp_path / "pamgate.toml"
    path.write_text(
        f"""
[[targets]]
name = "web01"
host = "10.0.0.1"
accounts = ["deploy", "root"]
host_keys = ["{HOST_KEY}"]
allowed_groups = ["ops", "dba"]

[[targets]]
name = "db01"
host = "10.0.0.2"
accounts = ["postgres"]
host_keys = ["{HOST_KEY}"]
allowed_groups = ["dba"]
"""
    )
    return AllowList(load_config(path))


def test_authorize_default_and_named_account(allow_list: AllowList) -> None:
    default = allow_list.authorize(("ops",), "web01", None)
    assert (default.target.name, default.account) == ("web01", "deploy")
    assert default.authority == "allow-list:group=ops"
    assert allow_list.authorize(("ops",), "web01", "root").account == "root"


def test_authorize_refusals(allow_list: AllowList) -> None:
    with pytest.raises(UnknownTarget, match="Targets you may reach: web01"):
        allow_list.authorize(("ops",), "nosuch", None)
    with pytest.raises(AccessDenied):
        allow_list.authorize(("ops",), "db01", None)
    with pytest.raises(UnknownAccount, match="Accounts: deploy, root"):
        allow_list.authorize(("ops",), "web01", "admin")
    with pytest.raises(AccessDenied):
        allow_list.authorize((), "web01", None)


def test_reachable_targets(allow_list: AllowList) -> None:
    assert [t.name for t in allow_list.reachable_targets(("dba",))] == ["web01", "db01"]
    assert allow_list.reachable_targets(("visitors",)) == []
