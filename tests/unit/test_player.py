"""Replay internals on synthetic recordings: the index, seeking and key handling."""

from __future__ import annotations

import io
import json
import os
from pathlib import Path

from recordings.player import (
    SEEK_TAIL,
    PlainRecording,
    Player,
    RecordingIndex,
    render_screen,
    screen_at,
    split_keys,
)
from recordings.sanitize import TerminalSanitizer


def write_cast(
    path: Path, events: list[tuple[float, str, str]], width: int = 40, height: int = 5
) -> Path:
    lines = [json.dumps({"version": 2, "width": width, "height": height, "timestamp": 0})]
    lines += [json.dumps([t, code, data]) for t, code, data in events]
    path.write_text("\n".join(lines) + "\n")
    return path


def test_screen_at_shows_the_screen_of_that_moment(tmp_path: Path) -> None:
    events = [(float(i), "o", f"line {i}\r\n") for i in range(1, 30)]
    path = write_cast(tmp_path / "a.cast", events)
    index = RecordingIndex.build(path)
    assert index.duration == 29.0
    terminal, _ = screen_at(path, index, 10.5)
    rows = [row.rstrip() for row in terminal.screen.display]
    assert rows[-2] == "line 10" and "line 11" not in rows


def test_seek_uses_only_a_tail_of_output(tmp_path: Path) -> None:
    noise = "x" * 10_000 + "\r\n"
    events = [(i * 0.5, "o", noise) for i in range(200)]  # 2 MB of output
    events.append((100.5, "o", "\x1b[2J\x1b[Hfinal screen"))
    path = write_cast(tmp_path / "big.cast", events)
    index = RecordingIndex.build(path)
    point = index.at_or_before(100.5)
    start = index.tail_start(point)
    assert point.output_chars - start.output_chars < 3 * SEEK_TAIL  # not the whole recording
    terminal, _ = screen_at(path, index, 101)
    assert terminal.screen.display[0].rstrip() == "final screen"


def test_index_tracks_the_alternate_screen(tmp_path: Path) -> None:
    events = [(0.0, "o", "$ vim\r\n"), (1.5, "o", "\x1b[?1049hVIM SCREEN"), (3.0, "o", "more")]
    path = write_cast(tmp_path / "alt.cast", events)
    index = RecordingIndex.build(path)
    assert [p.in_alt for p in index.points] == [False, False, True]
    terminal, _ = screen_at(path, index, 2.0)
    assert terminal.in_alt and terminal.screen.display[0].startswith("VIM SCREEN")


def test_index_is_cached_next_to_the_recording(tmp_path: Path) -> None:
    path = write_cast(tmp_path / "c.cast", [(0.5, "o", "hi")])
    recording = PlainRecording(path)
    first = recording.index()
    assert (tmp_path / "c.cast.idx").exists()
    assert recording.index() == first


def test_torn_last_line_is_tolerated(tmp_path: Path) -> None:
    path = write_cast(tmp_path / "torn.cast", [(0.5, "o", "kept\r\n")])
    with open(path, "a") as handle:
        handle.write('[1.0, "o", "half a li')
    index = RecordingIndex.build(path)
    assert index.duration == 0.5


def test_keys_read_together_are_all_handled() -> None:
    assert split_keys("nn\x1b[Cq") == ["next", "next", "forward", "quit"]
    assert split_keys("zx\x1b[A") == []


def test_player_jumps_to_next_command_and_quits(tmp_path: Path) -> None:
    events = [(0.0, "o", "$ "), (1.0, "o", "echo one"), (2.0, "o", "\r\none\r\n$ "),
              (30.0, "o", "echo two"), (31.0, "o", "\r\ntwo\r\n$ ")]  # fmt: skip
    path = write_cast(tmp_path / "p.cast", events)
    reader, writer = os.pipe()
    os.write(writer, b"nnq")  # first command, second command, quit
    out = io.StringIO()
    player = Player(
        PlainRecording(path), out=out, keys_fd=reader, speed=1.0, command_times=[2.0, 31.0]
    )
    player.play()
    os.close(reader)
    os.close(writer)
    shown = out.getvalue()
    assert "echo two" in shown  # the screen just before the second Enter was drawn
    assert "\r\ntwo\r\n" not in shown  # quit before it played on


def test_render_screen_output_is_itself_safe(tmp_path: Path) -> None:
    path = write_cast(tmp_path / "r.cast", [(0.0, "o", "\x1b[1;31mred\x1b[0m plain")])
    terminal, _ = screen_at(path, RecordingIndex.build(path), 1)
    drawn = render_screen(terminal.screen)
    assert TerminalSanitizer().feed(drawn) == drawn
    assert "\x1b[0;1;31mr" in drawn


def test_exec_output_without_a_pty_is_drawn_line_under_line(tmp_path: Path) -> None:
    """No pty turned ``\\n`` into ``\\r\\n``: newline_returns draws it as the viewer's terminal
    would (the CLI replay), and a reset (``ESC c``) in the output does not undo that."""
    events = [(0.1, "o", "one\ntwo\n\x1bcthree\nfour\n")]
    path = write_cast(tmp_path / "exec.cast", events)
    index = RecordingIndex.build(path)
    staircase, _ = screen_at(path, index, 1.0)
    assert staircase.screen.display[1].rstrip() == "     four"  # starts where "three" ended
    terminal, _ = screen_at(path, index, 1.0, newline_returns=True)
    assert [row.rstrip() for row in terminal.screen.display[:2]] == ["three", "four"]
