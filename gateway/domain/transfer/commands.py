"""Which exec commands start a file-transfer server, read as the target's shell would read them.

An exec command reaches the target's shell, so a transfer server can be
started in many ways: ``scp -t``, ``rsync --server`` behind an
``--rsync-path`` (``exec rsync``, ``sudo rsync``, ``cd /srv && rsync``), an
SFTP server by its path (what ``sftp -s /usr/lib/openssh/sftp-server``
sends), ``dd of=FILE`` (Ansible's fallback for copying a file).

:func:`classify_exec` splits the command as a POSIX shell does (quoting by
:mod:`shlex`; ``;``, ``&``, ``&&``, ``||``, ``|``, parentheses and newlines
end a command), looks through what runs its arguments as a command
(``exec``, ``env``, ``sudo``, ``doas``, ``nice``, ``nohup``, ``timeout``,
``sh -c``, ``su -c``, ...) and through absolute paths, and returns:

- :class:`ExecTransfer`: one transfer server, recognised: tool,
  direction, paths, and the options that matter to a rule;
- :class:`UnclearTransfer`: the command names a transfer program (or
  passes rsync's ``--server``) in a way this reading cannot follow: behind
  a wrapper it does not know, in a pipeline or with a redirection, two in
  one command, an option where it could be read two ways;
- None: no transfer server.

What the shell computes (variables, command substitution, aliases,
scripts, commands typed into a shell) is beyond any reading of the
command line: like ``cat > file``, it is outside what ``file_transfer``
governs, and the session recording is its record.

Plain Python, no sockets.
"""

from __future__ import annotations

import posixpath
import re
import shlex
from collections.abc import Callable
from dataclasses import dataclass, field

from gateway.domain.transfer.modes import Direction

#: Shell commands nested deeper than this (``sh -c "sh -c ..."``) are not followed.
MAX_DEPTH = 6
#: Characters that form the shell's operators.
_OPERATOR_CHARS = ";&|()<>\n"
#: Reserved words and prefixes that may precede a command.
_PREFIXES = frozenset({"!", "{", "}", "if", "then", "else", "elif", "do", "while", "until"})
_ASSIGNMENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*=")
#: Program names (basenames) of the transfer servers, and look-alikes (``scp.real``).
_TRANSFER_NAME = re.compile(r"^(?:scp|rsync|openrsync|dd)(?:[._-].*)?$|sftp[-_]?server")
_SFTP_SERVER = re.compile(r"sftp[-_]?server")
_SHELLS = frozenset({"sh", "bash", "dash", "zsh", "ksh", "mksh", "ash", "posh", "yash"})
#: dd's names for its standard input and output.
_STDIN = frozenset({"-", "/dev/stdin", "/dev/fd/0", "/proc/self/fd/0"})
_STDOUT = frozenset({"-", "/dev/stdout", "/dev/fd/1", "/proc/self/fd/1"})
#: dd operands that leave the stream and the file's content the same.
_DD_PLAIN = frozenset({"if", "of", "bs", "ibs", "obs", "status"})


@dataclass(frozen=True)
class ExecTransfer:
    """An exec command recognised as a file-transfer tool's server side."""

    tool: str  # "sftp", "scp", "rsync" or "dd"
    #: Which way file contents move; None for SFTP, whose direction is per request.
    direction: Direction | None
    #: Paths named on the command line (for the audit trail and path scopes).
    paths: tuple[str, ...] = ()
    #: rsync: the option that compresses its stream, which a byte cap cannot count.
    compression: str | None = None
    #: rsync ``-s``: the rest of the arguments come on the stream (:func:`read_rsync_args`).
    protected_args: bool = False
    #: rsync: an option with which even a sender writes on the target.
    changes_target: str | None = None
    #: dd: the stream is the file's whole content (no skip, seek, count, conv).
    whole: bool = True


@dataclass(frozen=True)
class UnclearTransfer:
    """A command that names a transfer server in a way the gateway cannot follow."""

    reason: str
    tool: str | None = None


@dataclass(frozen=True)
class RsyncArgs:
    """What an rsync server's arguments say (:func:`read_rsync_args`)."""

    sender: bool
    paths: tuple[str, ...]
    compression: str | None
    protected_args: bool
    changes_target: str | None
    #: Why the arguments cannot be read with certainty, if they cannot.
    unclear: str | None = None


Found = ExecTransfer | UnclearTransfer | None


def classify_exec(command: str) -> Found:
    """Recognise the transfer server an exec command starts (see the module docstring)."""
    reading = _Reading()
    reading.script(command, depth=0, plumbed=False)
    return reading.result()


#: What separates the names inside one word (``"rsync --server"``, ``x;scp``, ``--opt=dd``).
_INSIDE_WORD = re.compile(r"[\s;&|()<>`'\"$=,{}]+")


def mentions_transfer(words: list[str]) -> str | None:
    """The first name of a transfer server, or rsync's ``--server``, inside ``words``."""
    for word in words:
        for part in _INSIDE_WORD.split(word):
            if part.startswith("--server") or _TRANSFER_NAME.search(posixpath.basename(part)):
                return part[:80]
    return None


# -- rsync's arguments -----------------------------------------------------------------------

#: rsync's short options that take an argument (the rest of the word, or the next one).
_RSYNC_SHORT_WITH_ARG = frozenset("eBTfM@")
_RSYNC_COMPRESSION = frozenset(
    {"--compress", "--old-compress", "--new-compress", "--compress-choice", "--zc",
     "--compress-level", "--zl"}
)  # fmt: skip
_RSYNC_PROTECTS = frozenset({"--secluded-args", "--protect-args"})
#: Options with which an rsync server writes on the target even when it only sends.
_RSYNC_WRITES = frozenset(
    {"--remove-source-files", "--remove-sent-files", "--log-file", "--write-batch",
     "--only-write-batch"}
)  # fmt: skip


def read_rsync_args(args: list[str]) -> RsyncArgs:
    """Read the arguments of an rsync server (after the program name).

    rsync (popt) reads options anywhere before ``--``; its client always
    puts ``--server`` first and, for a sender, ``--sender`` right after it.
    ``--sender`` anywhere else could be an option's argument or a file
    name, so it is unclear; so are ``--daemon`` (the direction is chosen on
    the stream) and a ``--server`` that is not first.
    """
    end = args.index("--") if "--" in args else len(args)
    options = args[:end]
    sender = args[1:2] == ["--sender"]
    elsewhere = [i for i, word in enumerate(args) if word == "--sender" and i != 1]
    unclear = None
    if elsewhere or (args[1:2] == ["--sender"] and args[:1] != ["--server"]):
        unclear = "rsync's --sender where rsync may read it otherwise"
    elif args.count("--server") > 1:
        unclear = "rsync's --server given twice"
    elif "--daemon" in args:
        unclear = "rsync's daemon mode (its direction is chosen on the stream)"
    compression = protected = changes = converts = None
    for word in options:
        name = word.split("=", 1)[0]
        if word.startswith("--"):
            if name in _RSYNC_COMPRESSION:
                compression = compression or word[:60]
            elif name in _RSYNC_PROTECTS:
                protected = word
            elif name in _RSYNC_WRITES:
                changes = changes or name
            elif name == "--iconv":
                converts = word
        elif word.startswith("-") and word != "-":
            for letter in word[1:]:
                if letter in _RSYNC_SHORT_WITH_ARG:
                    break
                if letter == "z":
                    compression = compression or "-z"
                elif letter == "s":
                    protected = "-s"
    if protected and converts and not unclear:
        # rsync converts the arguments it reads from the stream: they could say anything.
        unclear = "rsync -s with --iconv"
    dot = args.index(".") if "." in args else len(args)
    paths = tuple(word for word in args[dot + 1 :] if word != "--")
    return RsyncArgs(sender, paths, compression, protected is not None, changes, unclear)


#: rsync reads at most this many bytes of each argument on the stream (MAXPATHLEN - 1).
RSYNC_STREAM_ARG_LIMIT = 4095


def with_stream_args(transfer: ExecTransfer, stream_args: list[str]) -> Found:
    """An ``rsync -s`` server once its arguments on the stream are read.

    ``stream_args`` are what the client sent after the command line (the
    first is rsync's new ``argv[0]``). rsync parses them on top of the
    command line, so they are read as if appended to it: a ``--sender``,
    ``--server`` or ``--daemon`` among them is unclear.
    """
    head = ["--server", "--sender"] if transfer.direction == Direction.DOWNLOAD else ["--server"]
    head.append("-s")  # what else the command line said: nothing in the stream follows --server
    found = _rsync(["rsync", *head, *(arg[:RSYNC_STREAM_ARG_LIMIT] for arg in stream_args[1:])])
    if isinstance(found, ExecTransfer):
        # The command line's options hold too (its compression, its -s).
        return ExecTransfer(
            "rsync", found.direction, found.paths,
            compression=transfer.compression or found.compression,
            changes_target=transfer.changes_target or found.changes_target,
        )  # fmt: skip
    return found


# -- the reading ------------------------------------------------------------------------------


@dataclass
class _Reading:
    """What the commands of one exec line turned out to start."""

    transfers: list[tuple[ExecTransfer, bool]] = field(default_factory=list)
    unclear: list[UnclearTransfer] = field(default_factory=list)

    def result(self) -> Found:
        if self.unclear:
            return self.unclear[0]
        if not self.transfers:
            return None
        if len(self.transfers) > 1:
            tools = " and ".join(t.tool for t, _ in self.transfers)
            return UnclearTransfer(f"more than one transfer server in one command ({tools})")
        transfer, plumbed = self.transfers[0]
        if plumbed:
            return UnclearTransfer(
                f"{transfer.tool} with its input or output piped or redirected", transfer.tool
            )
        return transfer

    def script(self, text: str, *, depth: int, plumbed: bool) -> None:
        """Read a shell command line (an exec command, or the string of ``sh -c``)."""
        if depth > MAX_DEPTH:
            if mentions_transfer(text.split()):
                self.unclear.append(UnclearTransfer("shell commands nested too deep"))
            return
        try:
            commands = _simple_commands(text)
        except ValueError:  # unbalanced quotes: the shell refuses it too
            if mentions_transfer(text.split()):
                self.unclear.append(UnclearTransfer("unbalanced quotes around a transfer server"))
            return
        for words, own_plumbing in commands:
            self.command(words, depth=depth, plumbed=plumbed or own_plumbing)

    def command(self, words: list[str], *, depth: int, plumbed: bool) -> None:
        """Read one simple command: look through wrappers, then at the program."""
        index = 0
        while index < len(words):
            word, name = words[index], posixpath.basename(words[index])
            if _ASSIGNMENT.match(word) or word in _PREFIXES:
                # A variable naming a transfer server is there to be run as one.
                self._unexplained([word.partition("=")[2]], "a variable")
                index += 1
            elif name in _SHELLS or name == "su":
                self._shell(words, index, depth=depth, plumbed=plumbed)
                return
            elif name == "env" and (split := _env_split_string(words, index)) is not None:
                words, index = split, 0
            elif name in _WRAPPERS:
                after = _WRAPPERS[name](words, index + 1)
                if after is None:
                    return self._unexplained(words[index:], f"{name} with options it cannot read")
                index = after
            else:
                break
        if index < len(words):
            self._program(words[index:], plumbed=plumbed)

    def _program(self, words: list[str], *, plumbed: bool) -> None:
        name = posixpath.basename(words[0])
        recognise = _RECOGNISERS.get(name)
        if recognise is None and _SFTP_SERVER.search(name):
            recognise = _sftp_server
        if recognise is None:
            if _TRANSFER_NAME.search(name):
                self.unclear.append(UnclearTransfer(f"a program named like one ({name[:40]})"))
            else:
                self._unexplained(words[1:], f"an argument of {name[:40]}")
            return
        found = recognise(words)
        if isinstance(found, UnclearTransfer):
            self.unclear.append(found)
        elif found is not None:
            self.transfers.append((found, plumbed))

    def _shell(self, words: list[str], index: int, *, depth: int, plumbed: bool) -> None:
        """``sh -c SCRIPT [ARG0 ARGS...]`` and ``su -c SCRIPT``: read SCRIPT as a command line."""
        found = _shell_script(words, index)
        if found is None:  # a script file, or commands on stdin: nothing to read here
            self._unexplained(words[index + 1 :], f"{posixpath.basename(words[index])} "
                              "without -c")  # fmt: skip
            return
        script, rest = found
        self.script(script, depth=depth + 1, plumbed=plumbed)
        # ARG0 and ARGS reach the script as $0, $@: a transfer server there is unclear.
        self._unexplained(rest, "the arguments of a shell script")

    def _unexplained(self, words: list[str], where: str) -> None:
        marker = mentions_transfer(words)
        if marker is not None:
            self.unclear.append(UnclearTransfer(f"{marker} in {where}"))


def _simple_commands(text: str) -> list[tuple[list[str], bool]]:
    """The simple commands of a command line: their words, and whether piped or redirected.

    A quoted operator (``';'``) is read as an operator: that only ever
    splits more than the shell does.
    """
    lexer = shlex.shlex(text, posix=True, punctuation_chars=_OPERATOR_CHARS)
    lexer.whitespace = " \t\r"  # a newline ends a command, like ';'
    lexer.whitespace_split = True
    lexer.commenters = ""  # '#' starts a comment only at a word's start: kept as a word
    commands: list[tuple[list[str], bool]] = []
    words: list[str] = []
    plumbed = piped_in = redirect_target = False
    for token in lexer:
        if token and all(char in _OPERATOR_CHARS for char in token):
            if "<" in token or ">" in token:
                plumbed = redirect_target = True
                continue
            piped = "|" in token.replace("||", "")
            commands.append((words, plumbed or piped_in or piped))
            words, plumbed, piped_in = [], False, piped
        elif redirect_target:
            redirect_target = False
        else:
            words.append(token)
    commands.append((words, plumbed or piped_in))
    return [(words, plumbed) for words, plumbed in commands if words]


# -- wrappers: where each one's command starts -------------------------------------------------


def _options(
    with_arg: str, flags: str, long_with_arg: frozenset[str] = frozenset()
) -> Callable[[list[str], int], int | None]:
    """A reader of getopt-style options; returns the index of the first operand, or None."""

    def skip(words: list[str], index: int) -> int | None:
        while index < len(words):
            word = words[index]
            if word == "--":
                return index + 1
            if not word.startswith("-") or word == "-":
                return index
            if word.startswith("--"):
                name = word.split("=", 1)[0]
                index += 2 if name in long_with_arg and "=" not in word else 1
                continue
            for position, letter in enumerate(word[1:], start=1):
                if letter in with_arg:
                    index += 1 if position < len(word) - 1 else 2
                    break
                if letter not in flags:
                    return None
            else:
                index += 1
        return index

    return skip


def _then_operand(
    read: Callable[[list[str], int], int | None],
) -> Callable[[list[str], int], int | None]:
    """Options, then one operand (a duration, a directory), then the command."""

    def skip(words: list[str], index: int) -> int | None:
        after = read(words, index)
        return None if after is None else after + 1

    return skip


def _env(words: list[str], index: int) -> int | None:
    after = _options("uCP", "i0v", frozenset({"--unset", "--chdir"}))(words, index)
    while after is not None and after < len(words) and _ASSIGNMENT.match(words[after]):
        after += 1
    return after


def _env_split_string(words: list[str], index: int) -> list[str] | None:
    """``env [OPTIONS] -S STRING ARGS``: env with STRING split into words, then ARGS.

    None if env has no ``-S`` among its options.
    """
    position = index + 1
    while position < len(words):
        word = words[position]
        string = None
        if word in ("-S", "--split-string") and position + 1 < len(words):
            string, rest = words[position + 1], words[position + 2 :]
        elif word.startswith("--split-string="):
            string, rest = word.split("=", 1)[1], words[position + 1 :]
        elif word.startswith("-S") and len(word) > 2:
            string, rest = word[2:], words[position + 1 :]
        elif word in ("-u", "-C", "-P", "--unset", "--chdir"):
            position += 2
            continue
        elif not word.startswith("-") or word in ("-", "--"):
            return None
        if string is not None:
            try:
                split = shlex.split(string)
            except ValueError:
                split = string.split()
            return [*words[index:position], *split, *rest]
        position += 1
    return None


_SUDO_LONG_WITH_ARG = frozenset(
    {"--close-from", "--chdir", "--group", "--host", "--prompt", "--chroot", "--role", "--type",
     "--command-timeout", "--other-user", "--user"}
)  # fmt: skip


def _sudo(words: list[str], index: int) -> int | None:
    after = _options("CDghpRrtTUu", "ABbEHiKklnPSsVv", _SUDO_LONG_WITH_ARG)(words, index)
    while after is not None and after < len(words) and _ASSIGNMENT.match(words[after]):
        after += 1
    return after


_WRAPPERS: dict[str, Callable[[list[str], int], int | None]] = {
    "exec": _options("a", "cl"),
    "command": _options("", "pvV"),
    "builtin": _options("", ""),
    "nohup": _options("", ""),
    "time": _options("", "p"),
    "setsid": _options("", "cfw"),
    "nice": _options("n", "0123456789", frozenset({"--adjustment"})),
    "ionice": _options("cn", "t"),
    "stdbuf": _options("ioe", "", frozenset({"--input", "--output", "--error"})),
    "timeout": _then_operand(_options("sk", "v", frozenset({"--signal", "--kill-after"}))),
    "chroot": _then_operand(_options("", "", frozenset({"--userspec", "--groups"}))),
    "env": _env,
    "sudo": _sudo,
    "doas": _options("uC", "nsL"),
    "busybox": _options("", ""),
}


def _shell_script(words: list[str], index: int) -> tuple[str, list[str]] | None:
    """The script of ``SHELL [options] -c SCRIPT ...`` or ``su ... -c SCRIPT``, and what follows."""
    su = posixpath.basename(words[index]) == "su"
    position, has_c = index + 1, False
    while position < len(words):
        word = words[position]
        if su and word.startswith("--command="):
            return word.split("=", 1)[1], words[position + 1 :]
        if su and word == "--command" and position + 1 < len(words):
            return words[position + 1], words[position + 2 :]
        if word in ("--", "-") or not word.startswith(("-", "+")):
            if su and not has_c:  # su's user name comes before or after its options
                position += 1
                continue
            break
        if word in ("-o", "+o", "--rcfile", "--init-file") or (
            su and word in ("-s", "-g", "-G", "--shell", "--group")
        ):
            position += 2
            continue
        if not word.startswith("--") and "c" in word[1:]:
            has_c = True
            if su:
                return (
                    (words[position + 1], words[position + 2 :])
                    if (position + 1 < len(words))
                    else None
                )
        position += 1
    if has_c and position < len(words):
        return words[position], words[position + 1 :]
    return None


# -- the transfer servers ----------------------------------------------------------------------

#: scp's getopt string (OpenSSH 9): flags, and options that take an argument.
_SCP_FLAGS = frozenset("12346ABCTdfOpqRrstv")
_SCP_WITH_ARG = frozenset("DFJMPSciloX")


def _scp(words: list[str]) -> Found:
    """``scp -t`` (sink: an upload) or ``scp -f`` (source: a download; wins over -t)."""
    letters: set[str] = set()
    index = 1
    while index < len(words):
        word = words[index]
        if word == "--":
            index += 1
            break
        if not word.startswith("-") or word == "-":
            break
        for position, letter in enumerate(word[1:], start=1):
            if letter in _SCP_WITH_ARG:
                index += 0 if position < len(word) - 1 else 1
                break
            if letter not in _SCP_FLAGS:
                return UnclearTransfer(f"scp with an option it does not have (-{letter})", "scp")
            letters.add(letter)
        index += 1
    operands = words[index:]
    if any(word.startswith("-") and word != "-" for word in operands):
        # OpenSSH's scp stops at its first operand; a scp that permutes would not.
        return UnclearTransfer("scp with options after its operands", "scp")
    if "f" in letters:
        return ExecTransfer("scp", Direction.DOWNLOAD, tuple(operands))
    if "t" in letters:
        return ExecTransfer("scp", Direction.UPLOAD, tuple(operands))
    return None  # the scp client, run on the target


def _rsync(words: list[str]) -> Found:
    """``rsync --server [--sender] ...``: a receiver (an upload) or a sender (a download)."""
    args = words[1:]
    if "--server" not in args:
        return None  # the rsync client, run on the target
    read = read_rsync_args(args)
    if args[0] != "--server":
        return UnclearTransfer("rsync's --server where the client never puts it", "rsync")
    if read.unclear:
        return UnclearTransfer(read.unclear, "rsync")
    direction = Direction.DOWNLOAD if read.sender else Direction.UPLOAD
    return ExecTransfer(
        "rsync", direction, read.paths, compression=read.compression,
        protected_args=read.protected_args, changes_target=read.changes_target,
    )  # fmt: skip


def _sftp_server(words: list[str]) -> Found:
    """An SFTP server started by path: the SFTP auditor decides per request."""
    return ExecTransfer("sftp", None)


def _dd(words: list[str]) -> Found:
    """``dd of=FILE`` writes the session's input to FILE (an upload); ``dd if=FILE`` a download."""
    operands: dict[str, str] = {}
    for word in words[1:]:
        key, _, value = word.partition("=")
        operands[key] = value  # the last one counts, as in GNU dd
    source, sink = operands.get("if"), operands.get("of")
    reads_client = source is None or source in _STDIN
    writes_client = sink is None or sink in _STDOUT
    whole = set(operands) <= _DD_PLAIN and all("=" in word for word in words[1:])
    if reads_client and sink is not None and not writes_client:
        return ExecTransfer("dd", Direction.UPLOAD, (sink,), whole=whole)
    if writes_client and source is not None and not reads_client:
        return ExecTransfer("dd", Direction.DOWNLOAD, (source,), whole=whole)
    return None  # a filter between the session's input and output, or a copy on the target


_RECOGNISERS: dict[str, Callable[[list[str]], Found]] = {
    "scp": _scp,
    "rsync": _rsync,
    "openrsync": _rsync,
    "dd": _dd,
    "gesftpserver": _sftp_server,
}
