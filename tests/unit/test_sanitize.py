"""Escape-safe replay: a corpus of hostile recordings, asserting the exact bytes let through."""

from __future__ import annotations

import pytest

from recordings.sanitize import TerminalSanitizer

E = "\x1b"


def clean(*chunks: str) -> str:
    sanitizer = TerminalSanitizer()
    return "".join(sanitizer.feed(chunk) for chunk in chunks)


@pytest.mark.parametrize(
    ("hostile", "expected"),
    [
        # Answer-back: device attributes, status and cursor reports, window reports.
        (f"a{E}[cb", "ab"),
        (f"a{E}[0cb", "ab"),
        (f"a{E}[>cb", "ab"),
        (f"a{E}[=cb", "ab"),
        (f"a{E}[5nb{E}[6n", "ab"),
        (f"a{E}[?6n", "a"),
        (f"a{E}[14tb{E}[18t{E}[21t", "ab"),
        (f"a{E}[?1$pb", "ab"),  # DECRQM
        (f"a{E}Zb", "ab"),  # DECID
        ("a\x05b", "ab"),  # ENQ answerback
        (f'{E}P$q"p{E}\\x', "x"),  # DECRQSS (a DCS)
        # Clipboard, title, hyperlinks, palette, other OSC.
        (f"a{E}]52;c;ZWNobyBwd25lZA=={E}\\b", "ab"),
        (f"a{E}]52;c;ZWNobw==\x07b", "ab"),
        (f"a{E}]0;owned title\x07b", "ab"),
        (f"a{E}]2;title{E}\\b", "ab"),
        (f"{E}]8;;https://evil.example/{E}\\click{E}]8;;{E}\\", "click"),
        (f"a{E}]4;1;rgb:ff/00/00\x07b", "ab"),
        (f"a{E}]10;?\x07b", "ab"),
        # DCS, APC, PM, SOS strings, 7-bit and 8-bit.
        (f"a{E}Pq#0;2;0;0;0#0~~{E}\\b", "ab"),  # sixel
        (f"a{E}_Gf=100;AAAA{E}\\b", "ab"),  # kitty graphics (APC)
        (f"a{E}^secret{E}\\b", "ab"),
        (f"a{E}Xsos{E}\\b", "ab"),
        ("a\x9d0;title\x9cb", "ab"),
        ("a\x90dcs\x9cb", "ab"),
        ("a\x9b6nb", "ab"),  # 8-bit CSI DSR
        # Mouse and focus reporting, keyboard protocol changes, printing, reset.
        (f"a{E}[?1000hb{E}[?1006h{E}[?1004h{E}[?9h", "ab"),
        (f"a{E}[>4;2mb", "ab"),
        (f"a{E}[5ib{E}[4i", "ab"),
        (f"a{E}cb", "ab"),  # RIS
        (f"a{E}[!pb", "ab"),  # DECSTR
        (f"a{E}[?3hb", "ab"),  # 132-column mode resizes the window
        # Stray controls.
        ("a\x07\x0e\x0f\x7f\x00b", "ab"),
        ("a\x85\x8e\x8fb", "ab"),
    ],
)
def test_hostile_sequences_are_dropped(hostile: str, expected: str) -> None:
    assert clean(hostile) == expected


@pytest.mark.parametrize(
    "benign",
    [
        f"{E}[1;31mred{E}[0m",
        f"{E}[38;5;208mo{E}[38;2;1;2;3mt{E}[m",
        f"{E}[H{E}[2J{E}[10;20Hx{E}[K{E}[1A{E}[3C{E}[2D{E}[B",
        f"{E}[5;20r{E}[S{E}[T{E}[L{E}[M{E}[P{E}[@{E}[X",
        f"{E}7saved{E}8{E}M{E}D{E}E",
        f"{E}[?25l{E}[?25h{E}[?1049h{E}[?1049l{E}[?2004h{E}[?7l",
        f"{E}(0lqk{E}(B",
        f"{E}[2 q",
        "tab\there\r\nnext line\bX",
        "wide 你好 and emoji 🙂",
    ],
)
def test_screen_sequences_pass_unchanged(benign: str) -> None:
    assert clean(benign) == benign


def test_mixed_mode_list_keeps_only_allowed_modes() -> None:
    assert clean(f"{E}[?1049;1000;25h") == f"{E}[?1049;25h"
    assert clean(f"{E}[?1000;1006h") == ""


def test_sequences_split_across_chunks() -> None:
    assert clean(f"a{E}", "]52;c;Zm9v", "YmFy", "\x07", "b") == "ab"
    assert clean(f"{E}[3", "1mred", f"{E}", "[0m") == f"{E}[31mred{E}[0m"
    assert clean(f"{E}", "[", "6", "n", "x") == "x"


def test_unterminated_string_gives_up_after_a_bound() -> None:
    sanitizer = TerminalSanitizer()
    swallowed = sanitizer.feed(f"{E}]52;c;" + "A" * 70_000)
    assert swallowed.endswith("A") and len(swallowed) < 10_000
    assert sanitizer.feed("visible") == "visible"


def test_overlong_csi_is_dropped_whole() -> None:
    assert clean(f"{E}[" + "1;" * 100 + "mX") == "X"
    assert clean(f"{E}[" + "9" * 1000 + "nY") == "Y"


def test_esc_inside_a_string_ends_it_and_starts_a_sequence() -> None:
    assert clean(f"{E}]0;title{E}[31mred") == f"{E}[31mred"
