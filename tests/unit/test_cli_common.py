"""What the CLI's command groups share: the table layout and JSON output, ISO times typed
on the command line, the services each command opens and closes, and the operator the
environment names."""

from __future__ import annotations

import argparse
import json
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest

from gateway.cli.common import DelegatedOperator, delegated_operator, open_services
from gateway.cli.render import json_time, print_json_document, print_json_line, table_lines
from gateway.config import load_config, parse_iso_time, parse_since
from gateway.datadir import initialize
from gateway.errors import PamgateError, UsageError
from gateway.services import GatewayServices


def test_tables_pad_columns_two_spaces_apart_without_trailing_spaces() -> None:
    lines = table_lines([("alice", "enabled", ""), ("a-long-name", "disabled", "ops")],
                        header=("NAME", "STATUS", "GROUPS"))  # fmt: skip
    assert lines == [
        "NAME         STATUS    GROUPS",
        "alice        enabled",
        "a-long-name  disabled  ops",
    ]
    assert table_lines([("serial 2", "x")], indent="  ") == ["  serial 2  x"]
    assert table_lines([]) == []


def test_iso_times_are_utc_unless_they_say_and_errors_name_the_option() -> None:
    assert parse_iso_time("2026-11-23T08:00", "--at") == datetime(2026, 11, 23, 8, tzinfo=UTC)
    assert parse_iso_time("2026-11-23", "--at") == datetime(2026, 11, 23, tzinfo=UTC)
    zoned = parse_iso_time("2026-11-23T08:00+02:00", "--at")
    assert zoned.utcoffset() == timedelta(hours=2)
    assert zoned == datetime(2026, 11, 23, 6, tzinfo=UTC)
    with pytest.raises(PamgateError, match=r"^--at 'tomorrow': give an ISO date/time$"):
        parse_iso_time("tomorrow", "--at")
    with pytest.raises(PamgateError, match=r"^--review-by 'soon': give an ISO date$"):
        parse_iso_time("soon", "--review-by", expected="an ISO date")
    # --since and --until take ages too, and say so.
    assert parse_since(" 2026-11-23T08:00 ") == datetime(2026, 11, 23, 8, tzinfo=UTC)
    with pytest.raises(PamgateError, match=r"^--until 'x': give an age \(30m, 12h, 7d\) or an ISO"):
        parse_since("x", "--until")


def test_open_services_closes_them_however_the_command_ends(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config_path = tmp_path / "pamgate.toml"
    config_path.write_text('[gateway]\ndata_dir = "."\n')
    config = load_config(config_path)
    args = argparse.Namespace(loaded_config=config)
    with pytest.raises(PamgateError, match="init' first"), open_services(args):
        pass
    initialize(config)
    closed: list[GatewayServices] = []
    original_close = GatewayServices.close

    def close(self: GatewayServices) -> None:
        closed.append(self)
        original_close(self)

    monkeypatch.setattr(GatewayServices, "close", close)
    with open_services(args) as services:
        assert services.users.list_users() == []
    assert closed == [services]
    with pytest.raises(PamgateError, match="boom"), open_services(args) as failing:
        raise PamgateError("boom")
    assert closed == [services, failing]


def test_the_operator_named_by_the_environment_is_checked_before_anything_runs() -> None:
    assert delegated_operator({}) is None
    assert delegated_operator({"PAMGATE_OPERATOR": "bob"}) == DelegatedOperator("bob", None)
    named = delegated_operator({"PAMGATE_OPERATOR": "bob", "PAMGATE_OPERATOR_SESSION": "4f2a9c"})
    assert named == DelegatedOperator("bob", "4f2a9c")
    # Set but empty or malformed never falls back to the local administrator.
    for name in ("", "bob smith", "-bob", "b" * 65):
        with pytest.raises(UsageError, match="PAMGATE_OPERATOR=.* is not a pamgate user name"):
            delegated_operator({"PAMGATE_OPERATOR": name})
    for session in ("a b", "x\n", "'; drop", "s" * 129):
        with pytest.raises(UsageError, match="PAMGATE_OPERATOR_SESSION=.* is not a session id"):
            delegated_operator({"PAMGATE_OPERATOR": "bob", "PAMGATE_OPERATOR_SESSION": session})


def test_json_output_writes_times_in_utc_and_sets_as_lists(
    capsys: pytest.CaptureFixture[str],
) -> None:
    zoned = datetime(2026, 11, 23, 8, 30, tzinfo=timezone(timedelta(hours=2)))
    assert json_time(zoned) == "2026-11-23T06:30:00Z" and json_time(None) is None
    print_json_line({"at": zoned, "roles": frozenset({"b", "a"}), "path": Path("x/y")})
    print_json_document({"name": "svc", "n": 1})
    line, *document = capsys.readouterr().out.splitlines()
    assert json.loads(line) == {"at": "2026-11-23T06:30:00Z", "roles": ["a", "b"], "path": "x/y"}
    assert json.loads("\n".join(document)) == {"name": "svc", "n": 1} and len(document) == 4
