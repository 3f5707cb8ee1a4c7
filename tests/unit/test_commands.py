"""Command extraction from synthetic terminal streams shaped like bash/readline and zsh."""

from __future__ import annotations

import time

from recordings.asciicast import Event
from recordings.commands import Command, CommandExtractor


class Session:
    """Builds an event stream: keystrokes ("i") and what the shell prints ("o")."""

    def __init__(self, width: int = 80, height: int = 24) -> None:
        self.extractor = CommandExtractor(width, height)
        self.clock = 0.0
        self.commands: list[str] = []

    def out(self, text: str) -> Session:
        return self._event("o", text)

    def key(self, keys: str, echo: str | None = None) -> Session:
        """Type ``keys``; the shell echoes ``echo`` (default: the keys themselves)."""
        self._event("i", keys)
        if echo is None:
            echo = keys
        return self.out(echo) if echo else self

    def enter(self, then: str = "") -> Session:
        """Press Enter; the shell echoes a newline, then prints ``then``."""
        self._event("i", "\r")
        return self.out("\r\n" + then)

    def resize(self, width: int, height: int) -> Session:
        return self._event("r", f"{width}x{height}")

    def done(self) -> list[str]:
        self.commands += [c.text for c in self.extractor.finish()]
        return self.commands

    def _event(self, code: str, data: str) -> Session:
        self.clock += 0.1
        self.commands += [c.text for c in self.extractor.feed(Event(self.clock, code, data))]
        return self


PROMPT = "alice@web01:~$ "


def test_plain_commands() -> None:
    s = Session().out("Welcome\r\n" + PROMPT)
    s.key("l").key("s").enter("a.txt  b.txt\r\n" + PROMPT)
    s.key("pwd").enter("/home/alice\r\n" + PROMPT)
    assert s.done() == ["ls", "pwd"]


def test_command_times_are_the_enter_keystroke() -> None:
    extractor = CommandExtractor()
    events = [
        Event(0.5, "o", PROMPT),
        Event(1.0, "i", "id"),
        Event(1.1, "o", "id"),
        Event(2.25, "i", "\r"),
        Event(2.3, "o", "\r\nuid=0\r\n" + PROMPT),
    ]
    assert [(c.time, c.text) for c in extractor.feed_all(events)] == [(2.25, "id")]


def test_backspace_and_cursor_left_insert() -> None:
    s = Session().out(PROMPT)
    s.key("lx").key("\x7f", "\b \b").key("s").enter(PROMPT)
    # Type "cho hi", go left six times, insert "e": readline redraws the tail.
    s.key("cho hi").key("\x1b[D" * 6, "\b" * 6).key("e", "echo hi" + "\b" * 6)
    s.enter("hi\r\n" + PROMPT)
    assert s.done() == ["ls", "echo hi"]


def test_history_recall() -> None:
    s = Session().out(PROMPT)
    s.key("ls -la").enter("...\r\n" + PROMPT)
    s.key("\x1b[A", "ls -la").key("\x1b[A", "\r\x1b[K" + PROMPT + "uptime")
    s.enter(" 10:00 up 1 day\r\n" + PROMPT)
    assert s.done() == ["ls -la", "uptime"]


def test_tab_completion_inline_and_listing() -> None:
    s = Session().out(PROMPT)
    s.key("ech").key("\t", "o ").key("hi").enter("hi\r\n" + PROMPT)
    s.key("cat fi").key("\t", "le").key("\t", "\r\nfile1  file2\r\n" + PROMPT + "cat file")
    s.key("2").enter("contents\r\n" + PROMPT)
    assert s.done() == ["echo hi", "cat file2"]


def test_ctrl_c_and_empty_enter_log_nothing() -> None:
    s = Session().out(PROMPT)
    s.key("rm -rf /").key("\x03", "^C\r\n" + PROMPT)
    s.enter(PROMPT).enter(PROMPT)
    s.key("whoami").enter("alice\r\n" + PROMPT)
    assert s.done() == ["whoami"]


def test_sudo_password_is_never_a_command() -> None:
    s = Session().out(PROMPT)
    s.key("sudo ls /root").enter("[sudo] password for alice: ")
    s.key("hunter2-secret", echo="").enter("secret.txt\r\n" + PROMPT)
    commands = s.done()
    assert commands == ["sudo ls /root"]
    assert not any("hunter2" in c for c in commands)


def test_wide_characters() -> None:
    s = Session().out(PROMPT)
    s.key("echo 你好世界 ok").enter("你好世界 ok\r\n" + PROMPT)
    assert s.done() == ["echo 你好世界 ok"]


def test_soft_wrapped_long_command_is_one_line() -> None:
    s = Session(width=30, height=10).out(PROMPT)
    long_command = "echo " + "abcdefghij" * 7
    for chunk in (long_command[i : i + 9] for i in range(0, len(long_command), 9)):
        s.key(chunk)
    s.enter("x\r\n" + PROMPT)
    assert s.done() == [long_command]


def test_wrapped_command_at_the_bottom_of_the_screen() -> None:
    s = Session(width=30, height=4).out("\r\n" * 10 + PROMPT)
    long_command = "printf '%s' " + "z" * 40
    s.key(long_command).enter("zz\r\n" + PROMPT)
    assert s.done() == [long_command]


def test_zsh_right_prompt_is_excluded() -> None:
    s = Session().out("% \x1b[70G[git:main]\x1b[3G")
    s.key("make test").enter("ok\r\n% \x1b[70G[git:main]\x1b[3G")
    s.key("ls").enter()
    assert s.done() == ["make test", "ls"]


def test_full_screen_programs_produce_no_commands() -> None:
    s = Session().out(PROMPT)
    s.key("vim notes.txt").enter('\x1b[?1049h\x1b[H\x1b[2J~\r\n~\r\n"notes.txt" 0L')
    s.key("ihello world", echo="hello world").key("\x1b:wq", echo=":wq").enter("")
    s.out("\x1b[?1049l" + PROMPT)
    s.key("less /etc/passwd").enter("\x1b[?1049hroot:x:0:0\r\n:")
    s.key("/bash\r", echo="/bash").key("q", echo="\x1b[?1049l" + PROMPT)
    s.key("top").enter("\x1b[?1047htop - 10:00\r\n")
    s.key("q", echo="\x1b[?1047l" + PROMPT)
    s.key("echo back").enter("back\r\n" + PROMPT)
    assert s.done() == ["vim notes.txt", "less /etc/passwd", "top", "echo back"]


def test_resize_mid_edit_leaves_the_line_to_the_keystrokes() -> None:
    s = Session().out(PROMPT)
    s.key("ls -").resize(100, 30).key("la").enter("...\r\n" + PROMPT)
    s.key("date").enter("Mon\r\n" + PROMPT)
    assert s.done() == ["ls -la", "date"]


def test_runaway_output_does_not_wedge_the_extractor() -> None:
    s = Session().out(PROMPT)
    s.key("yes | tr -d '\\n'").enter()
    started = time.monotonic()
    for _ in range(200):  # 20 MB without a newline
        s.out("y" * 100_000)
    s.key("\x03", "^C\r\n" + PROMPT)
    s.key("echo done").enter("done\r\n" + PROMPT)
    assert time.monotonic() - started < 10
    assert s.done() == ["yes | tr -d '\\n'", "echo done"]


def test_typeahead_before_the_first_prompt_is_logged_from_the_keystrokes() -> None:
    s = Session()
    s.key("touch /tmp/early\r", echo="")
    s.out("Last login: today\r\n" + PROMPT + "touch /tmp/early\r\n" + PROMPT)
    s.key("id").enter("uid=1000\r\n" + PROMPT)
    assert s.done() == ["touch /tmp/early", "id"]


def test_sources_and_disagreement_are_marked() -> None:
    extractor = CommandExtractor()
    events = [
        Event(0.1, "o", PROMPT),
        Event(0.2, "i", "ls\r"),  # typed and echoed: both witnesses
        Event(0.3, "o", "ls\r\na\r\n" + PROMPT),
        Event(0.4, "i", "\x1b[A\r"),  # history recall: only the screen knows
        Event(0.5, "o", "ls\r\na\r\n" + PROMPT),
        Event(0.6, "i", "stty -echo\r"),
        Event(0.7, "o", "stty -echo\r\n" + PROMPT),
        Event(0.8, "i", "rm -rf /tmp/x\r"),  # not echoed: only the keystrokes know
        Event(0.9, "o", "\r\n" + PROMPT),
        Event(1.0, "i", "echo hi\r"),  # the screen shows something else
        Event(1.1, "o", "echo ho\r\n" + PROMPT),
    ]
    found = [(c.text, c.source, c.note) for c in extractor.feed_all(events)]
    assert found == [
        ("ls", "screen+keys", ""),
        ("ls", "screen", ""),
        ("stty -echo", "screen+keys", ""),
        ("rm -rf /tmp/x", "keys", "never appeared on the screen"),
        ("echo ho", "screen", "the keystrokes say: echo hi"),
    ]


def test_paste_of_several_lines() -> None:
    s = Session().out(PROMPT)
    s._event("i", "echo one\recho two\r")
    s.out("echo one\r\none\r\n" + PROMPT + "echo two\r\ntwo\r\n" + PROMPT)
    s._event("i", "\x1b[200~echo three\recho four\x1b[201~\r")
    s.out("echo three\r\nthree\r\n" + PROMPT + "echo four\r\nfour\r\n" + PROMPT)
    assert s.done() == ["echo one", "echo two", "echo three", "echo four"]


def test_space_at_the_wrap_column_keeps_the_whole_command() -> None:
    for width in (20, 23, 30):
        for pad in range(0, width):
            command = "echo" + " " * (pad + 1) + "tar -czf /tmp/x.tgz /etc/passwd /etc/group"
            s = Session(width=width, height=6).out(PROMPT[:8])
            s.key(command).enter("x\r\n" + PROMPT[:8])
            assert s.done() == [command], (width, pad)


def test_zero_width_characters_do_not_cut_the_line() -> None:
    s = Session().out(PROMPT)
    s.key("echo \u2764\ufe0f deployed; echo after").enter(
        "\u2764\ufe0f deployed\r\nafter\r\n" + PROMPT
    )
    s.key("echo \u3164 x; echo after").enter("\u3164 x\r\nafter\r\n" + PROMPT)
    assert s.done() == ["echo \u2764\ufe0f deployed; echo after", "echo \u3164 x; echo after"]


def test_continuations_heredocs_and_compound_commands_are_one_entry() -> None:
    s = Session().out(PROMPT)
    s.key("echo start \\").enter("> ").key("continued").enter("start continued\r\n" + PROMPT)
    s.key("cat <<EOF").enter("> ").key("body 1").enter("> ").key("EOF")
    s.enter("body 1\r\n" + PROMPT)
    s.key("echo 'a").enter("> ").key("b'").enter("a\r\nb\r\n" + PROMPT)
    s.key("for i in 1 2").enter("> ").key("do echo $i").enter("> ").key("done")
    s.enter("1\r\n2\r\n" + PROMPT)
    assert s.done() == [
        "echo start continued",
        "cat <<EOF\nbody 1\nEOF",
        "echo 'a\nb'",
        "for i in 1 2; do echo $i; done",
    ]


def test_format_characters_cannot_hide_output_from_replay_or_extraction() -> None:
    # pyte stops drawing a chunk at a zero-width format character (U+202E, U+200B),
    # which would let a session hide what followed; the terminal model drops them.
    from recordings.terminal import TerminalModel

    terminal = TerminalModel(40, 2)
    terminal.feed("shown \u202e cat /etc/shadow\u200b and more\r\nnext")
    lines = ["".join(terminal.screen.buffer[y][x].data for x in range(40)).rstrip()
             for y in range(2)]  # fmt: skip
    assert lines == ["shown  cat /etc/shadow and more", "next"]


def test_typed_ahead_line_with_tab_that_never_shows_is_logged_from_its_keys() -> None:
    extractor = CommandExtractor()
    events = [Event(0.1, "i", "cat /etc/pass\t\r"), Event(0.2, "o", "\r\n")]
    found = [(c.text, c.source) for c in extractor.feed_all(events)]
    assert found == [("cat /etc/pass", "keys")]


def test_a_quote_the_joiner_misreads_cannot_swallow_later_commands() -> None:
    """``$'it\\'s'`` looks like an open quote to a simple scanner; bash shows its
    primary prompt again, so the next line is a command of its own."""
    s = Session().out(PROMPT)
    s.key("echo $'it\\'s'").enter("it's\r\n" + PROMPT)
    s.key("rm -rf /tmp/evidence").enter(PROMPT)
    assert s.done() == ["echo $'it\\'s'", "rm -rf /tmp/evidence"]


def test_hostile_keystrokes_stay_bounded_and_in_order() -> None:
    # An escape sequence split between two input events is one key (cursor left).
    s = Session().out(PROMPT)
    s.key("echo ac\x1b[", echo="echo ac").key("Db", echo="\bbc\b").enter("abc\r\n" + PROMPT)
    assert s.done() == ["echo abc"]
    # A never-closed heredoc joins at most MAX_JOINED_PARTS lines, then is logged.
    from recordings.commands import MAX_JOINED_PARTS, HistoryJoiner

    joiner = HistoryJoiner()
    found = joiner.feed(Command(0.0, "cat <<NEVER"))
    for n in range(MAX_JOINED_PARTS + 5):
        found += joiner.feed(Command(float(n), f"line {n}"))
    found += joiner.finish()
    assert found[0].text.count("\n") == MAX_JOINED_PARTS - 1
    assert [c.text for c in found[1:]] == [
        f"line {n}" for n in range(MAX_JOINED_PARTS - 1, MAX_JOINED_PARTS + 5)
    ]
    # A pasted line longer than MAX_KEY_LINE is cut, and flagged uncertain, not kept whole.
    from recordings.commands import MAX_KEY_LINE, KeyLine

    line = KeyLine()
    line.insert("y" * (MAX_KEY_LINE + 10))
    assert len(line.chars) == MAX_KEY_LINE and not line.certain
