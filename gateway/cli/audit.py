"""``pamgate audit``: the hash-chained audit trails ('human' and 'machine'):
verify, export, follow, checkpoint, and the file-transfer report."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from gateway.cli.common import STDIO, is_stdio, open_operator, refuse_host_path
from gateway.cli.render import add_json_option, print_json_line
from gateway.config import parse_since
from gateway.errors import PamgateError

if TYPE_CHECKING:
    from gateway.cli.common import Subcommands
    from gateway.domain.audit.trail import AuditRecord, Trail


def add_commands(commands: Subcommands) -> None:
    """``audit verify|export|tail|files|checkpoint``."""
    audit = commands.add_parser(
        "audit",
        help="verify, export and follow the audit trails",
        description=(
            "The audit trails are hash chains: 'human' (people, their sessions, user "
            "administration) and 'machine' (non-human identities). Each is verified, "
            "exported and followed on its own."
        ),
    ).add_subparsers(dest="audit_command", metavar="SUBCOMMAND", required=True)
    verify = audit.add_parser(
        "verify",
        help="check a trail's hash chain and checkpoints",
        description=(
            "Walk the hash chain of a trail (default: both) and check it against the signed "
            "checkpoints. Exit 0 with the event count if intact; otherwise exit 1 naming the "
            "first broken event and what is wrong."
        ),
    )
    verify.add_argument("--trail", choices=[t.value for t in _trails()], help="default: both")
    verify.add_argument(
        "--checkpoints",
        type=Path,
        metavar="FILE",
        help="checkpoint file to check against, besides every node's checkpoints in the "
        "database (default: the data directory's; give an off-box copy, which may hold "
        f"several nodes' lines, to detect a rewritten chain; {STDIO}: stdin)",
    )
    verify.set_defaults(handler=cmd_audit_verify)
    export = audit.add_parser(
        "export",
        help="stream a trail as JSON lines",
        description="Write a trail's events as JSON lines (one object per event), for a SIEM.",
    )
    export.add_argument("--trail", choices=[t.value for t in _trails()], required=True)
    export.add_argument(
        "--since",
        metavar="WHEN",
        help="ISO date/time (UTC if no zone), or an age such as 30m, 12h, 7d",
    )
    export.add_argument("--format", choices=["jsonl"], default="jsonl")
    export.add_argument(
        "-o", "--output", type=Path, metavar="FILE", help=f"default (or {STDIO}): stdout"
    )
    export.set_defaults(handler=cmd_audit_export)
    tail = audit.add_parser(
        "tail",
        help="show the newest events",
        description="Show the newest events of a trail; with -f, keep following new ones.",
    )
    tail.add_argument(
        "--trail", choices=[t.value for t in _trails()], default="human", help="default: human"
    )
    tail.add_argument(
        "-n",
        "--lines",
        type=int,
        default=20,
        metavar="N",
        help="how many of the newest events (default 20)",
    )
    tail.add_argument("-f", "--follow", action="store_true")
    tail.add_argument(
        "--json", action="store_true", help="one JSON object per event, as 'audit export' writes"
    )
    tail.set_defaults(handler=cmd_audit_tail)
    files = audit.add_parser(
        "files",
        help="which files moved: who, which target, direction, size, sha256, under what",
        description=(
            "List file transfers and file changes (SFTP, scp, rsync) from both trails: time, "
            "user, target, direction, path, bytes, sha256 (when the whole file passed), "
            "complete or not, and the authority (grant:N, policy:RULE, nhi:NAME). Refusals "
            "are listed too. Read from the audit trail alone."
        ),
    )
    files.add_argument("--user", help="a user or NHI name")
    files.add_argument("--target", help="a target name")
    files.add_argument("--since", metavar="WHEN", help="ISO date/time (UTC if no zone) or an age")
    files.add_argument("--until", metavar="WHEN", help="ISO date/time (UTC if no zone) or an age")
    files.add_argument("--opened", action="store_true", help="also list file.opened events")
    add_json_option(files)
    files.set_defaults(handler=cmd_audit_files)
    checkpoint = audit.add_parser(
        "checkpoint",
        help="sign the trails' head hashes now",
        description=(
            "Sign the current head hash of each trail with the gateway's audit key and append "
            "it to DATA_DIR/audit/checkpoints.jsonl. Copy that file off the box: verification "
            "against an old copy detects a truncated or rewritten chain."
        ),
    )
    checkpoint.add_argument(
        "-o", "--output", metavar="-",
        help="with '-', also print the new checkpoints as JSON lines on stdout (to keep them "
        "off the gateway host: ssh NAME:admin@gw audit checkpoint -o - >> checkpoints.jsonl)",
    )  # fmt: skip
    checkpoint.set_defaults(handler=cmd_audit_checkpoint)


def _trails() -> list[Trail]:
    # The choices come from the enum itself, so a new trail shows up in --trail.
    from gateway.domain.audit.trail import Trail

    return list(Trail)


def cmd_audit_verify(args: argparse.Namespace) -> int:
    from gateway.domain.audit.trail import Trail

    refuse_host_path(args, args.checkpoints, "--checkpoints")
    with open_operator(args) as actions:
        trails = [Trail(args.trail)] if args.trail else list(Trail)
        if is_stdio(args.checkpoints):
            checkpoints = actions.parse_checkpoints(sys.stdin.read(), "stdin")
        else:
            checkpoints = actions.read_checkpoints(args.checkpoints)
            if args.checkpoints is not None and not args.checkpoints.exists():
                raise PamgateError(f"checkpoint file {args.checkpoints} does not exist")
        failed = False
        for trail in trails:
            result = actions.verify_trail(trail, progress=_progress(f"{trail}: verified"))
            problem = (
                result.problem if not result.ok else actions.checkpoint_problem(trail, checkpoints)
            )
            if problem:
                failed = True
                print(f"{trail}: BROKEN: {problem}")
            else:
                print(f"{trail}: OK, {result.count} events, head {result.head_hash[:16]}")
    if checkpoints:
        outcome = "some trails disagree" if failed else "all agree"
        nodes = ", ".join(sorted({c.node for c in checkpoints}))
        print(f"compared with {len(checkpoints)} signed checkpoints (nodes {nodes}): {outcome}")
    return 1 if failed else 0


def cmd_audit_export(args: argparse.Namespace) -> int:
    from gateway.domain.audit.trail import Trail

    refuse_host_path(args, args.output, "-o")
    to_file = args.output is not None and not is_stdio(args.output)
    with open_operator(args) as actions:
        since = parse_since(args.since) if args.since else None
        reader = actions.audit_reader()
        out = open(args.output, "w", encoding="utf-8") if to_file else sys.stdout  # noqa: SIM115
        try:
            count = 0
            for record in reader.events(Trail(args.trail), since=since):
                out.write(record.to_json() + "\n")
                count += 1
        finally:
            if to_file:
                out.close()
    if to_file:
        print(f"wrote {count} {args.trail} events to {args.output}", file=sys.stderr)
    return 0


def cmd_audit_tail(args: argparse.Namespace) -> int:
    import time

    from gateway.domain.audit.trail import Trail

    if args.lines < 0:
        raise PamgateError("-n/--lines cannot be negative")
    show = _print_json_record if args.json else _print_record
    with open_operator(args) as actions:
        reader = actions.audit_reader()
        trail = Trail(args.trail)
        last = 0
        for record in reader.tail(trail, max(args.lines, 0)):
            show(record)
            last = record.seq
        if not last:
            last = reader.head(trail)[0]
        while args.follow:
            time.sleep(0.5)
            # Each read checks the operator's role again: a disabled operator stops here.
            for record in reader.events(trail, after_seq=last):
                show(record)
                last = record.seq
    return 0


def _print_record(record: AuditRecord) -> None:
    print(_format_record(record), flush=True)


def _print_json_record(record: AuditRecord) -> None:
    print(record.to_json(), flush=True)


def cmd_audit_files(args: argparse.Namespace) -> int:
    from recordings.sanitize import one_line

    with open_operator(args) as actions:
        since = parse_since(args.since) if args.since else None
        until = parse_since(args.until, "--until") if args.until else None
        found_records = actions.file_transfers(
            user=args.user, target=args.target, since=since, until=until,
            include_opened=args.opened,
        )  # fmt: skip
        count = 0
        for found in found_records:
            row = found.row()
            count += 1
            if args.json:
                print_json_line(row)
                continue
            size = "-" if row["bytes"] is None else str(row["bytes"])
            whole = {True: "complete", False: "partial"}.get(row["complete"], "-")
            path = row["path"] or ""
            if row["new_path"]:
                path += f" -> {row['new_path']}"
            facts = [row["time"][:19].replace("T", " "), row["user"], str(row["target"]),
                     row["action"].removeprefix("file."), row["outcome"],
                     str(row["direction"] or "-"), size, row["sha256"] or "-", whole,
                     str(row["tool"] or "-"), str(row["authority"] or "-"),
                     one_line(path)]  # fmt: skip
            if row["reason"]:
                facts.append(f"({one_line(row['reason'])})")
            # One line per event as it is read, not a table: a trail can be long.
            print("  ".join(facts), flush=True)
    if not args.json:
        print(f"{count} file events", file=sys.stderr)
    return 0


def cmd_audit_checkpoint(args: argparse.Namespace) -> int:
    if args.output not in (None, STDIO):
        raise PamgateError(
            f"-o takes only {STDIO} (stdout): the checkpoints always go to the data "
            "directory's file as well"
        )
    with open_operator(args) as actions:
        signed, path = actions.sign_checkpoints()
    # With -o -, stdout carries the checkpoints alone; what was done goes to stderr.
    report = sys.stderr if args.output == STDIO else sys.stdout
    for checkpoint in signed:
        if args.output == STDIO:
            print(json.dumps(checkpoint.__dict__, separators=(",", ":")))
        print(f"{checkpoint.trail}: event {checkpoint.seq} hash {checkpoint.hash[:16]} signed",
              file=report)  # fmt: skip
    print(f"appended to {path}; copy it somewhere safe", file=report)
    return 0


def _format_record(record: AuditRecord) -> str:
    """One audit event as one line of ``audit tail``."""
    from recordings.sanitize import one_line

    where = record.target or "-"
    if record.account:
        where = f"{record.account}@{where}"
    parts = [
        f"#{record.seq}", record.ts, record.action, record.outcome,
        f"actor={record.actor}", f"on={where}",
    ]  # fmt: skip
    for label, value in (
        ("session", record.session_id),
        ("from", record.source),
        ("authority", record.authority),
        ("reason", record.reason),
    ):
        if value:
            parts.append(f"{label}={value}")
    if record.details != "{}":
        parts.append(record.details)
    # Fields carry what clients sent (commands, names): one record, one line.
    return one_line(" ".join(parts))


def _progress(label: str) -> Callable[[int], None] | None:
    """A progress printer for long work, when stderr is a terminal."""
    if not sys.stderr.isatty():
        return None
    return lambda count: print(
        f"\r{label} {count:,} events...", end="", file=sys.stderr, flush=True
    )
