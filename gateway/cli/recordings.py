"""``pamgate recordings`` and ``pamgate replay``: session recordings (asciicast
v2), their command logs, sealed digests, exports and escape-safe playback."""

from __future__ import annotations

import argparse
import io
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from gateway.cli.common import STDIO, is_stdio, open_operator, refuse_host_path
from gateway.cli.render import add_json_option, print_json_line, print_table
from gateway.config import parse_since
from gateway.errors import PamgateError
from recordings.sanitize import one_line

if TYPE_CHECKING:
    from gateway.cli.common import Subcommands
    from gateway.domain.recordings.service import RecordingInfo


def add_commands(commands: Subcommands) -> None:
    """``recordings list|search|commands|export|verify`` and ``replay``."""
    recordings = commands.add_parser(
        "recordings",
        help="list, search, export and verify session recordings",
        description=(
            "Session recordings are asciicast v2 files (they play in asciinema). SESSION is a "
            "session id or a unique prefix of one."
        ),
    ).add_subparsers(dest="recordings_command", metavar="SUBCOMMAND", required=True)
    listing = recordings.add_parser(
        "list",
        help="recorded sessions, newest first",
        description="List recorded sessions, newest first.",
    )
    listing.add_argument("--user")
    listing.add_argument("--target")
    listing.add_argument("--since", metavar="WHEN", help="ISO date/time or an age (30m, 12h, 7d)")
    add_json_option(listing)
    listing.set_defaults(handler=cmd_recordings_list)
    search = recordings.add_parser(
        "search",
        help="find sessions by command text",
        description=(
            "Find commands containing TEXT (case-insensitive) in the command logs extracted "
            "from shell sessions. The command log is an audit aid: the recording is the evidence."
        ),
    )
    search.add_argument("text")
    add_json_option(search)
    search.set_defaults(handler=cmd_recordings_search)
    show = recordings.add_parser(
        "commands",
        help="a session's command log",
        description=(
            "Print the commands extracted from a session, one per line with its time. Two "
            "witnesses read them, the screen and the keystrokes: where only one saw a command, "
            "or they disagree, a note in brackets says so ([keys: never appeared on the "
            "screen], [screen: the keystrokes say: ...]). --json gives source and note for "
            "every command. While a session is live, and until the final pass over its "
            "sealed recording has run, the log is what was found so far: a first line in "
            "parentheses says so (--json: \"final\": false)."
        ),
    )
    show.add_argument("session", help="a session id, or a unique prefix of one")
    add_json_option(show)
    show.set_defaults(handler=cmd_recordings_commands)
    export = recordings.add_parser(
        "export",
        help="write a plain asciicast v2 file",
        description=(
            "Write a session's recording as a plain (uncompressed) asciicast v2 file, or to "
            f"stdout with -o {STDIO}."
        ),
    )
    export.add_argument("session")
    export.add_argument("-o", "--output", type=Path, required=True, metavar="FILE.cast",
                        help=f"{STDIO}: stdout")  # fmt: skip
    export.set_defaults(handler=cmd_recordings_export)
    verify = recordings.add_parser(
        "verify",
        help="check recordings against their sealed sha256",
        description="Check one recording (or all) against the sha256 stored when it was sealed.",
    )
    target = verify.add_mutually_exclusive_group(required=True)
    target.add_argument("session", nargs="?")
    target.add_argument("--all", action="store_true")
    verify.set_defaults(handler=cmd_recordings_verify)

    replay = commands.add_parser(
        "replay",
        help="play a session recording in the terminal",
        description=(
            "Play a session in this terminal. Keys: space pause, left/right seek 5 s, n/p next/"
            "previous command, q quit. Escape sequences that could act outside the screen "
            "(answer-back, clipboard, title, hyperlinks, ...) are removed. Without a terminal, "
            "the output is printed at once."
        ),
    )
    replay.add_argument("session")
    replay.add_argument("--speed", type=float, default=1.0, help="playback speed (default 1)")
    replay.add_argument(
        "--from", dest="start", default="0", metavar="HH:MM:SS|SECONDS", help="start here"
    )
    replay.add_argument(
        "--idle-limit", type=float, metavar="SECONDS", help="cap pauses between events"
    )
    replay.set_defaults(handler=cmd_replay)


def cmd_recordings_list(args: argparse.Namespace) -> int:
    with open_operator(args) as actions:
        since = parse_since(args.since) if args.since else None
        found = actions.recordings(user=args.user, target=args.target, since=since, limit=500)
    if args.json:
        for info in found:
            print_json_line(_recording_record(info))
        return 0
    if not found:
        print("no recorded sessions match")
        return 0
    rows = [
        (info.session_id[:12], f"{info.started_at:%Y-%m-%d %H:%M:%S}", info.user,
         f"{info.account}@{info.target}", info.kind, info.status, "yes" if info.sha256 else "no",
         "BREAK-GLASS" if info.break_glass else "")
        for info in found
    ]  # fmt: skip
    header = ("SESSION", "STARTED (UTC)", "USER", "WHERE", "KIND", "STATUS", "SEALED", "")
    print_table(rows, header=header)
    return 0


def _recording_record(info: RecordingInfo) -> dict[str, object]:
    """One row of ``recordings list --json``."""
    return {
        "session": info.session_id, "lane": info.lane, "started_at": info.started_at,
        "ended_at": info.ended_at, "user": info.user, "target": info.target,
        "account": info.account, "kind": info.kind, "status": info.status,
        "sealed": info.sha256 is not None, "sha256": info.sha256,
        "break_glass": info.break_glass, "authority": info.authority or None,
    }  # fmt: skip


def cmd_recordings_search(args: argparse.Namespace) -> int:
    with open_operator(args) as actions:
        hits = actions.search_commands(args.text)
    if not hits:
        if not args.json:
            print(f"no commands contain {args.text!r}")
        return 1
    for hit in hits:
        if args.json:
            print_json_line({"at": hit.at, "session": hit.session_id, "user": hit.user,
                             "where": hit.where, "offset": hit.offset,
                             "text": hit.text})  # fmt: skip
            continue
        print(
            f"{hit.at:%Y-%m-%d %H:%M:%S}  {hit.session_id[:12]}  {hit.user}  {hit.where}  "
            f"+{_clock(hit.offset)}  {one_line(hit.text)}"
        )
    return 0


def cmd_recordings_commands(args: argparse.Namespace) -> int:
    with open_operator(args) as actions:
        info = actions.recording(args.session)
        commands = actions.commands(info.session_id)
    if args.json:
        for command in commands:
            print_json_line({"session": info.session_id, "seq": command.seq,
                             "offset": command.offset, "at": command.at,
                             "text": command.text, "source": command.source,
                             "note": command.note, "final": info.commands_final})  # fmt: skip
        return 0
    so_far = info.commands_so_far_note() if commands or info.status == "live" else None
    if so_far:
        print(f"({so_far})")
    if not commands:
        print(f"no commands extracted for session {info.session_id} ({info.kind})")
    for command in commands:
        # Only one witness saw it, or they disagreed: say so after the command.
        flag = f"  [{command.source}: {command.note}]" if command.note else ""
        print(f"+{_clock(command.offset)}  {one_line(command.text)}{one_line(flag)}")
    return 0


def cmd_recordings_export(args: argparse.Namespace) -> int:
    refuse_host_path(args, args.output, "-o")
    with open_operator(args) as actions:
        if is_stdio(args.output):
            # UTF-8 whatever the locale says: the recording is asciicast (JSON lines).
            out = io.TextIOWrapper(sys.stdout.buffer, encoding="utf-8", newline="")
            try:
                actions.export_recording_to(args.session, out)
            finally:
                out.detach()
            return 0
        info = actions.export_recording(args.session, args.output)
    print(f"wrote session {info.session_id} to {args.output}")
    return 0


def cmd_recordings_verify(args: argparse.Namespace) -> int:
    with open_operator(args) as actions:
        references = (
            [i.session_id for i in actions.recordings(user=None, target=None, since=None,
                                                      limit=10**9)]
            if args.all
            else [args.session]
        )  # fmt: skip
        failed = 0
        for reference in references:
            info, problem = actions.verify_recording(reference)
            if problem:
                failed += 1
                print(f"{info.session_id}: FAILED: {problem}")
            elif info.status == "interrupted":
                print(f"{info.session_id}: OK ({info.sha256[:16]}; interrupted: sealed as found "  # type: ignore[index]
                      "after the crash)")  # fmt: skip
            else:
                print(f"{info.session_id}: OK ({info.sha256[:16]})")  # type: ignore[index]
    if args.all:
        print(f"{len(references) - failed} of {len(references)} recordings verified")
    return 1 if failed else 0


def cmd_replay(args: argparse.Namespace) -> int:
    from recordings.player import PlainRecording, Player, play_in_terminal, restore_terminal

    with open_operator(args) as actions:
        if args.speed <= 0:
            raise PamgateError("--speed must be above 0 (e.g. 0.5 for half speed)")
        if args.idle_limit is not None and args.idle_limit < 0:
            raise PamgateError("--idle-limit cannot be negative")
        start = _parse_position(args.start)
        info = actions.open_recording(args.session, purpose="replayed")
        assert info.path is not None
        if info.sha256 is None:
            print(
                f"note: session {info.session_id} was never sealed ({info.status}); "
                "showing the recording as written",
                file=sys.stderr,
            )
        command_times = [c.offset for c in actions.commands(info.session_id)]
    recording = PlainRecording(info.path)
    try:
        length = recording.index().duration
        if start > length:
            raise PamgateError(f"--from {args.start}: the recording is only {_clock(length)} long")
        interactive = sys.stdin.isatty() and sys.stdout.isatty()
        player = Player(
            recording,
            out=sys.stdout,
            keys_fd=sys.stdin.fileno() if interactive else None,
            speed=args.speed if interactive else 1e9,
            idle_limit=args.idle_limit if interactive else 0,
            command_times=command_times,
        )
        if interactive:
            play_in_terminal(player, start)
        else:
            try:
                player.play(start)
            finally:
                # Output on a terminal (``ssh -t ... replay X < /dev/null``) gets it back
                # clean; output to a file or a pipe stays the recording's text alone.
                if sys.stdout.isatty():
                    restore_terminal(sys.stdout)
    finally:
        recording.close()
    return 0


def _clock(seconds: float) -> str:
    """``HH:MM:SS`` of an offset into a recording."""
    whole = int(seconds)
    return f"{whole // 3600:02d}:{whole % 3600 // 60:02d}:{whole % 60:02d}"


def _parse_position(text: str) -> float:
    """Seconds into a recording from ``--from``: ``HH:MM:SS`` or plain seconds."""
    parts = text.split(":")
    try:
        if len(parts) == 1:
            value = float(parts[0])
        elif len(parts) == 3:
            value = int(parts[0]) * 3600 + int(parts[1]) * 60 + float(parts[2])
        else:
            raise ValueError
    except ValueError:
        raise PamgateError(f"--from {text!r}: give HH:MM:SS or seconds") from None
    if value < 0:
        raise PamgateError("--from cannot be negative")
    return value
