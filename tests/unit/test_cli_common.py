"""What the CLI's command groups share: the table layout, ISO times typed on the
command line, and the services each command opens and closes."""

from __future__ import annotations

import argparse
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from gateway.cli.common import open_services
from gateway.cli.render import table_lines
from gateway.config import load_config, parse_iso_time, parse_since
from gateway.datadir import initialize
from gateway.errors import PamgateError
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
