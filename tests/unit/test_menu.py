"""The in-terminal target menu as a byte-fed state machine."""

from __future__ import annotations

from pathlib import Path

from gateway.config import load_config
from gateway.ssh.menu import MenuChoice, TargetMenu
from tests.support.config import TARGET


def menu(tmp_path: Path) -> TargetMenu:
    path = tmp_path / "pamgate.toml"
    path.write_text(TARGET + TARGET.replace("web01", "db01"))
    return TargetMenu(load_config(path).targets)


def test_render_lists_numbered_targets(tmp_path: Path) -> None:
    text = menu(tmp_path).render()
    assert " 1) web01" in text and " 2) db01" in text
    assert text.endswith(TargetMenu.PROMPT)


def test_choose_by_number_with_editing(tmp_path: Path) -> None:
    target_menu = menu(tmp_path)
    echo, choice = target_menu.feed(b"9\x7f2")
    assert choice is None and echo == b"9\b \b2"
    _, choice = target_menu.feed(b"\r")
    assert choice == MenuChoice("db01", None)


def test_choose_by_name_and_account(tmp_path: Path) -> None:
    _, choice = menu(tmp_path).feed(b"root@web01\r")
    assert choice == MenuChoice("web01", "root")


def test_bad_choice_reprompts_and_ctrl_c_cancels(tmp_path: Path) -> None:
    target_menu = menu(tmp_path)
    echo, choice = target_menu.feed(b"7\r")
    assert choice is None and b"No such target" in echo
    _, choice = target_menu.feed(b"\x03")
    assert choice is None and target_menu.cancelled


def test_control_bytes_are_not_echoed(tmp_path: Path) -> None:
    echo, _ = menu(tmp_path).feed(b"\x1b[31mweb")
    assert echo == b"[31mweb"


def test_empty_menu_explains(tmp_path: Path) -> None:
    assert "You may not reach any target" in TargetMenu([]).render()
