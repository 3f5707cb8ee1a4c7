"""Command extraction from synthetic terminal streams shaped like bash/readline and zsh."""

from __future__ import annotations

import time

from recordings.asciicast import Event
from recordings.commands import CommandExtractor


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


def test_resize_mid_edit_discards_the_line() -> None:
    s = Session().out(PROMPT)
    s.key("ls -").resize(100, 30).key("la").enter("...\r\n" + PROMPT)
    s.key("date").enter("Mon\r\n" + PROMPT)
    assert s.done() == ["date"]


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


def test_typeahead_before_the_first_prompt_is_ignored() -> None:
    s = Session()
    s.key("garbage\r", echo="")
    s.out("Last login: today\r\n" + PROMPT)
    s.key("id").enter("uid=1000\r\n" + PROMPT)
    assert s.done() == ["id"]


def test_paste_of_several_lines() -> None:
    s = Session().out(PROMPT)
    s._event("i", "echo one\recho two\r")
    s.out("echo one\r\none\r\n" + PROMPT + "echo two\r\ntwo\r\n" + PROMPT)
    assert s.done()[0] == "echo one"


def test_format_characters_cannot_hide_output_from_replay_or_extraction() -> None:
    # pyte stops drawing a chunk at a zero-width format character (U+202E, U+200B),
    # which would let a session hide what followed; the terminal model drops them.
    from recordings.terminal import TerminalModel

    terminal = TerminalModel(40, 2)
    terminal.feed("shown \u202e cat /etc/shadow\u200b and more\r\nnext")
    lines = ["".join(terminal.screen.buffer[y][x].data for x in range(40)).rstrip()
             for y in range(2)]  # fmt: skip
    assert lines == ["shown  cat /etc/shadow and more", "next"]
