"""Replay internals on synthetic recordings: the index, seeking and key handling."""

from __future__ import annotations

import io
import json
import os
from pathlib import Path

from recordings.player import (
    SEEK_TAIL,
    TERMINAL_RESTORE,
    PlainRecording,
    Player,
    RecordingIndex,
    render_screen,
    screen_at,
    split_keys,
)
from recordings.sanitize import TerminalSanitizer
from recordings.terminal import TerminalModel


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


def test_index_follows_output_volume_on_dense_output(tmp_path: Path, monkeypatch) -> None:
    """``seq`` through the gateway: megabytes within one second of recording."""
    numbers = iter(range(1, 10**9))
    events = []
    for i in range(200):  # 200 events of about 32 KB, all within 0.2 s
        data = "".join(f"{next(numbers)}\r\n" for _ in range(4000))
        events.append((0.001 * (i + 1), "o", data))
    path = write_cast(tmp_path / "seq.cast", events, width=80, height=24)
    index = RecordingIndex.build(path)
    assert len(index.points) >= 150  # about one sample per event, not one per second
    fed: list[int] = []
    feed = TerminalModel.feed

    def counting_feed(self: TerminalModel, text: str) -> list[bool]:
        fed.append(len(text))
        return feed(self, text)

    monkeypatch.setattr(TerminalModel, "feed", counting_feed)
    moment = events[150][0] + 0.0001
    terminal, _ = screen_at(path, index, moment)
    assert sum(fed) <= SEEK_TAIL  # emulated: a tail, not the megabytes before it
    last_number = str(4000 * 151)
    rows = [row.rstrip() for row in terminal.screen.display]
    assert rows[-2] == last_number and rows[-3] == str(4000 * 151 - 1)


def test_hidden_strings_look_the_same_in_every_player(tmp_path: Path) -> None:
    """APC, PM and SOS strings (and OSC, DCS) are hidden by live playback, after a seek
    and in the console's screen model alike: one sanitiser for every view."""
    hidden = "A\x1b_apc-secret\x1b\\B\x1b^pm-secret\x1b\\C\x1bXsos-secret\x1b\\D\x9fc1-apc\x9cE"
    path = write_cast(tmp_path / "h.cast", [(0.5, "o", hidden), (1.5, "o", "\r\nend")])
    recording = PlainRecording(path)
    played = io.StringIO()
    Player(recording, out=played, keys_fd=None, speed=1e9).play()
    assert "ABCDE" in played.getvalue() and "secret" not in played.getvalue()
    # The CLI after a seek, and the console (both draw the screen model).
    seeked = io.StringIO()
    Player(recording, out=seeked, keys_fd=None).render_at(1.0)
    assert "ABCDE" in seeked.getvalue() and "secret" not in seeked.getvalue()
    terminal, _ = screen_at(path, recording.index(), 1.0)
    assert terminal.screen.display[0].rstrip() == "ABCDE"


def test_restore_undoes_every_mode_a_recording_may_set() -> None:
    """Each mode the sanitiser lets through is undone by TERMINAL_RESTORE."""
    import pyte

    screen = pyte.Screen(80, 24)
    stream = pyte.Stream(screen)
    set_by_recording = "\x1b[4h\x1b[20h\x1b[?6h\x1b[5;10r\x1b[?7l\x1b[?25l"
    stream.feed(TerminalSanitizer().feed(set_by_recording) + TERMINAL_RESTORE)
    from pyte import modes

    assert modes.IRM not in screen.mode and modes.LNM not in screen.mode
    assert modes.DECOM not in screen.mode and modes.DECAWM in screen.mode
    assert modes.DECTCEM in screen.mode and screen.margins is None
    for sequence in ("\x1b[?1l", "\x1b>", "\x1b[?1049l", "\x1b[?2004l", "\x1b[0m"):
        assert sequence in TERMINAL_RESTORE


def test_skipping_scrolled_plain_lines_draws_the_same_screen() -> None:
    """The seek shortcut for dense output must not change what the screen shows."""
    from recordings.player import _feed_tail

    lines = [f"{n} " + "x" * (n % 130) + ("\rover" if n % 7 == 0 else "") for n in range(400)]
    coloured = [
        f"\x1b[3{n % 8}m{n}\x1b[0m \x1b[1mbold" + ("\x1b[44m" if n == 390 else "")
        for n in range(400)
    ]
    cases = [
        "\r\n".join(coloured) + "\r\ntail in the pen of line 390",
        "\r\n".join(lines),
        "\x1b[31mred\x1b[0m\x1b[2;5H" + "\r\n".join(lines) + "\r\npartial",
        "\x1b[?1049h\x1b[Hfull\r\n" + "\r\n".join(lines) + "\r\n\u4f60\u597d wide",
        "\x1b]0;unterminated title " + "\r\n".join(lines),
        "\x1b[5;10r\x1b[7;1H" + "\r\n".join(lines[:50]),
    ]
    for text in cases:
        full = TerminalModel(80, 24)
        full.feed(text)
        quick = TerminalModel(80, 24)
        _feed_tail(quick, text)
        assert quick.screen.display == full.screen.display, text[:30]
        assert cells(quick) == cells(full), text[:30]
        assert (quick.screen.cursor.x, quick.screen.cursor.y) == (
            full.screen.cursor.x,
            full.screen.cursor.y,
        )


def cells(terminal: TerminalModel) -> list[tuple[str, str, str, bool]]:
    """Every cell of the screen with its colours and boldness."""
    screen = terminal.screen
    return [
        (cell.data, cell.fg, cell.bg, cell.bold)
        for y in range(screen.lines)
        for cell in (screen.buffer[y][x] for x in range(screen.columns))
    ]


def test_exec_output_without_a_pty_is_drawn_line_under_line(tmp_path: Path) -> None:
    """No pty turned ``\\n`` into ``\\r\\n``: newline_returns draws it as the viewer's terminal
    would (the CLI replay); without it, the lines make a staircase."""
    events = [(0.1, "o", "one\ntwo\nthree\n")]
    path = write_cast(tmp_path / "exec.cast", events)
    index = RecordingIndex.build(path)
    staircase, _ = screen_at(path, index, 1.0)
    assert staircase.screen.display[1].rstrip() == "   two"  # starts where "one" ended
    terminal, _ = screen_at(path, index, 1.0, newline_returns=True)
    assert [row.rstrip() for row in terminal.screen.display[:3]] == ["one", "two", "three"]
