"""Escape injection: a corpus of hostile recordings replayed in the CLI player and the console.

The CLI check is on the bytes the player writes to the terminal; the console
check is on every segment the console's terminal view hands to Textual. The
detector below is written independently of recordings/sanitize.py, so the two
check each other. The console's own end-to-end test with a real session is
tests/test_console_recordings.py::test_hostile_output_never_leaves_the_terminal_view.
"""

from __future__ import annotations

import io
import json
import unicodedata
from pathlib import Path
from typing import Any

import pytest

from recordings.player import PlainRecording, Player, render_screen, screen_at
from recordings.terminal import TerminalModel
from tests.support.escapes import dangerous_sequences
from tui.widgets import TerminalImage

pytestmark = pytest.mark.reliability

#: What an attacker with a shell on a target can print, hoping an auditor replays it.
CORPUS = {
    "clipboard write (OSC 52)": "\x1b]52;c;ZWNobyBwd25lZA==\x07",
    "clipboard write, ST-terminated": "\x1b]52;p;ZWNobyBwd25lZA==\x1b\\",
    "hyperlink (OSC 8)": "\x1b]8;;https://evil.example/\x1b\\click\x1b]8;;\x1b\\",
    "window title": "\x1b]0;pwned\x07\x1b]2;pwned\x07",
    "colour query (OSC 4/10/11)": "\x1b]4;1;?\x07\x1b]10;?\x07\x1b]11;?\x1b\\",
    "iTerm2 file drop (OSC 1337)": "\x1b]1337;File=name=cHduZWQ=;inline=1:SGVsbG8=\x07",
    "cwd report (OSC 7)": "\x1b]7;file://evil.example/etc\x07",
    "shell integration (OSC 133)": "\x1b]133;A\x07",
    "DECRQSS (DCS $ q)": "\x1bP$qm\x1b\\",
    "sixel image (DCS)": "\x1bPq#0;2;0;0;0#1!10~\x1b\\",
    "tmux passthrough (DCS)": "\x1bPtmux;\x1b\x1b]52;c;cHduZWQ=\x07\x1b\\",
    "kitty graphics (APC)": "\x1b_Gf=100,a=T;SGVsbG8=\x1b\\",
    "privacy message (PM)": "\x1b^pwned\x1b\\",
    "start of string (SOS)": "\x1bXpwned\x1b\\",
    "device status report": "\x1b[6n\x1b[5n\x1b[?6n",
    "device attributes": "\x1b[c\x1b[0c\x1b[>c\x1b[=c",
    "DECID answerback": "\x1bZ",
    "mode report (DECRQM)": "\x1b[?2026$p\x1b[4$p",
    "window ops and reports": "\x1b[21t\x1b[18t\x1b[8;100;300t\x1b[2t\x1b[3;0;0t",
    "mouse reporting": "\x1b[?9h\x1b[?1000h\x1b[?1002h\x1b[?1003h\x1b[?1006h\x1b[?1015h",
    "focus reporting": "\x1b[?1004h",
    "mixed mode list": "\x1b[?25;1000;1049h",
    "kitty keyboard query": "\x1b[?u\x1b[>1u",
    "printer (media copy)": "\x1b[5i\x1b[4i\x1b[?5i",
    "full reset (RIS)": "\x1bc",
    "8-bit CSI DSR": "\x9b6n",
    "8-bit OSC 52": "\x9d52;c;cHduZWQ=\x9c",
    "8-bit DCS": "\x90$qm\x9c",
    "bracketed paste end injection": "\x1b[201~rm -rf ~\n\x1b[200~",
    "unterminated OSC swallowing": "\x1b]52;c;" + "A" * 70000,
    "overlong CSI": "\x1b[" + "1;" * 200 + "m",
    "split across events": "\x1b]5",  # continued by the next event: "2;c;cHduZWQ=\x07"
    "right-to-left override": "safe\u202edm- mr\u202c",
    "NUL and DEL": "a\x00b\x7fc",
}


def write_cast(path: Path, outputs: list[str]) -> Path:
    lines = [json.dumps({"version": 2, "width": 80, "height": 24})]
    lines += [json.dumps([0.1 * (n + 1), "o", text]) for n, text in enumerate(outputs)]
    path.write_text("\n".join(lines) + "\n")
    return path


def corpus_outputs() -> list[str]:
    outputs = []
    for name, hostile in CORPUS.items():
        outputs.append(f"before {name}: ")
        outputs.append(hostile)
        if name == "split across events":
            outputs.append("2;c;cHduZWQ=\x07")
        outputs.append(" after\r\n")
    return outputs


def test_the_detector_sees_every_corpus_entry() -> None:
    """The detector itself must flag the raw corpus (or it would prove nothing below)."""
    missed = [
        name
        for name, hostile in CORPUS.items()
        if not dangerous_sequences(hostile)
        and name
        not in ("right-to-left override", "NUL and DEL", "split across events", "overlong CSI")
    ]
    assert missed == []


def test_cli_player_emits_no_dangerous_bytes(tmp_path: Path, figures: dict[str, Any]) -> None:
    path = write_cast(tmp_path / "hostile.cast", corpus_outputs())
    recording = PlainRecording(path)
    out = io.StringIO()
    player = Player(recording, out=out, keys_fd=None, speed=1e9, idle_limit=0)
    player.play()
    streamed = out.getvalue()
    assert streamed.count(" after") == len(CORPUS)  # the text around each attack survives
    player.render_at(player.duration / 2)  # the seek path draws a rebuilt screen
    played = out.getvalue()
    assert dangerous_sequences(played) == []
    assert "\u202e" not in played and "\x00" not in played
    terminal, _ = screen_at(path, recording.index(), player.duration)
    assert dangerous_sequences(render_screen(terminal.screen)) == []
    figures.update(hostile_sequences=len(CORPUS), dangerous_bytes_reaching_the_terminal=0)


def test_console_terminal_view_draws_no_controls() -> None:
    model = TerminalModel(80, 24)
    for output in corpus_outputs():
        model.feed(output)
        image = TerminalImage.of(model)
        for strip in image.lines:
            for segment in strip:
                text = segment.text
                assert all(unicodedata.category(c) not in ("Cc", "Cf") for c in text), repr(text)
                # pyte shows a PM string's text as text (harmless); OSC payloads never.
                assert "ZWNobyBwd25lZA" not in text and "evil.example" not in text
