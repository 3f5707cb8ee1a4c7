"""``pamgate machine``: non-human identities (service accounts, CI jobs,
agents) on the machine lane: their registration and status, and the
certificates, join tokens and revocations they live by."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from gateway.cli.common import (
    STDIO,
    is_stdio,
    open_operator,
    read_key_file,
    refuse_host_path,
)
from gateway.cli.render import (
    add_json_option,
    clip,
    print_json_document,
    print_json_line,
    print_table,
)
from gateway.config import parse_duration, parse_iso_time
from gateway.errors import PamgateError

if TYPE_CHECKING:
    from datetime import datetime

    from gateway.cli.common import Subcommands
    from gateway.domain.machines.registry import MachineView
    from gateway.domain.machines.revocation import OutstandingCertificate


def add_commands(commands: Subcommands) -> None:
    """``machine add|list|show|suspend|resume|offboard|issue|token|revoke|krl|known-hosts``."""
    machine = commands.add_parser(
        "machine",
        help="register and manage non-human identities (NHIs)",
        description=(
            "Non-human identities (service accounts, CI jobs, agents) use the machine lane "
            "with short-lived certificates from the machine CA. Every change is recorded in "
            "the machine audit trail.\n\n"
            "Workloads help themselves over the machine lane with stock ssh:\n"
            "  echo \"$TOKEN\" | ssh -p PORT -i KEY pamgate-join@GW ['pamgate-join --ttl 5m'] "
            "> KEY-cert.pub\n"
            "  ssh -p PORT -i KEY NAME@GW 'pamgate-renew [--ttl 5m]' < NEW_KEY.pub "
            "> NEW_KEY-cert.pub\n"
            "A join certifies the key the workload logged in with (default 5 min, at most the "
            "NHI's --max-ttl); a renewal certifies a new key, as the next generation."
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    ).add_subparsers(dest="machine_command", metavar="SUBCOMMAND", required=True)
    add = machine.add_parser(
        "add",
        help="register an NHI with its owners and scope",
        description=(
            "Register an NHI. --command takes an exact command string, or re:PATTERN (a "
            "Python regular expression that must match the whole command). Repeat --target "
            "and --command as needed."
        ),
    )
    add.add_argument("name")
    add.add_argument("--kind", required=True, choices=["service-account", "ci-pipeline", "agent",
                                                       "other"])  # fmt: skip
    add.add_argument("--owner", required=True, help="business owner")
    add.add_argument("--tech-owner", required=True, help="technical owner")
    add.add_argument("--purpose", required=True)
    add.add_argument("--target", action="append", default=[], metavar="T[:ACCOUNT]",
                     help="a target account it may use (repeatable)")  # fmt: skip
    add.add_argument("--command", action="append", default=[], metavar="PATTERN",
                     help="an allowed command (repeatable)")  # fmt: skip
    add.add_argument("--source", action="append", default=[], metavar="CIDR",
                     help="networks it may use (repeatable; default anywhere)")  # fmt: skip
    add.add_argument("--max-ttl", default="15m", help="longest certificate (default 15m, max 24h)")
    add.add_argument("--review-by", metavar="DATE", help="ISO date by which owners re-approve it")
    add.add_argument("--allow-pty", action="store_true", help="allow a pty (default: exec only)")
    add.add_argument("--allow-sftp", action="store_true", help="allow SFTP (default: no)")
    add.add_argument("--sftp-path", action="append", default=None, metavar="DIR",
                     help="hold SFTP and scp to this directory, as the target resolves paths "
                     "(repeatable; legacy scp -O and rsync are then refused; default: anywhere "
                     "the account can go)")  # fmt: skip
    add.set_defaults(handler=cmd_machine_add)
    listing = machine.add_parser("list", help="NHIs with owners, status and review dates",
                                 description="List NHIs; overdue reviews are flagged.")  # fmt: skip
    add_json_option(listing)
    listing.set_defaults(handler=cmd_machine_list)
    show = machine.add_parser("show", help="one NHI in full", description="Show one NHI in full.")
    show.add_argument("name")
    add_json_option(show, document=True)
    show.set_defaults(handler=cmd_machine_show)
    changes = (
        ("suspend", "suspended", "stop an NHI from connecting"),
        ("resume", "active", "let a suspended NHI connect again"),
        ("offboard", "offboarded", "retire an NHI for good (final)"),
    )
    for name, status, text in changes:
        description = text[0].upper() + text[1:] + "."
        if status == "offboarded":
            description += (
                " Revokes every outstanding certificate and join token and ends its live "
                "sessions within 2 s. The name cannot be registered again."
            )
        elif status == "suspended":
            description += " Its live sessions end within 2 s; 'resume' undoes it."
        sub = machine.add_parser(name, help=text, description=description)
        sub.add_argument("name")
        sub.add_argument("--reason", default="", help="kept in the machine audit trail")
        sub.set_defaults(handler=cmd_machine_status, status=status)
    issue = machine.add_parser(
        "issue",
        help="sign a short-lived certificate for an NHI's public key",
        description=(
            "Sign an OpenSSH user certificate for the NHI: principal = its name, validity "
            "from 60 s ago to now + TTL (at most its --max-ttl), force-command and "
            "source-address from its scope. Printed, or written with -o."
        ),
    )
    issue.add_argument("name")
    issue.add_argument("--pubkey", type=Path, required=True, metavar="FILE",
                       help=f"the workload's public key (.pub; {STDIO}: stdin)")  # fmt: skip
    issue.add_argument("--ttl", default="5m", help="lifetime (default 5m)")
    issue.add_argument("-o", "--output", type=Path, metavar="CERTFILE",
                       help=f"default (or {STDIO}): stdout")  # fmt: skip
    issue.set_defaults(handler=cmd_machine_issue)
    token = machine.add_parser(
        "token",
        help="make a join token a workload trades for its first certificate",
        description=(
            "Make a join token for the NHI. The workload sends it on stdin to the machine lane\n"
            "as the pamgate-join user, authenticating with the key it wants certified, and\n"
            "gets the certificate on stdout:\n\n"
            '  echo "$TOKEN" | ssh -p PORT -i KEY pamgate-join@GATEWAY > KEY-cert.pub\n\n'
            "The token is shown once; only its hash is kept."
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    token.add_argument("name")
    token.add_argument("--ttl", default="10m", help="how long the token works (default 10m)")
    token.add_argument("--uses", type=int, default=1, help="how many joins it allows (default 1)")
    token.set_defaults(handler=cmd_machine_token)
    revoke = machine.add_parser(
        "revoke",
        help="revoke certificates: all of an NHI's, or by serial, key id or key",
        description=(
            "Revoke at once: the next authentication is refused and live sessions using the "
            "certificate end within 2 s. NAME revokes every unexpired certificate pamgate "
            "issued to that NHI. Publish the result to targets with 'pamgate machine krl'."
        ),
    )
    what = revoke.add_mutually_exclusive_group(required=True)
    what.add_argument("name", nargs="?", help="an NHI: all its outstanding certificates")
    what.add_argument("--serial", type=int, help="one certificate serial (1 to 2^64-1)")
    what.add_argument(
        "--key-id",
        help="every certificate with this key id (no '#', line "
        "break or edge spaces: a KRL could not hold it)",
    )
    what.add_argument("--key", type=Path, metavar="FILE", help="every certificate on this key; "
                      f"the machine CA's public key: every certificate it signed ({STDIO}: "
                      "stdin)")  # fmt: skip
    revoke.add_argument("--reason", default="", help="kept in the machine audit trail")
    revoke.set_defaults(handler=cmd_machine_revoke)
    krl = machine.add_parser(
        "krl",
        help="write an OpenSSH KRL of every revoked machine certificate",
        description=(
            "Write an OpenSSH key revocation list (KRL) of everything revoked, for sshd's "
            "RevokedKeys on targets; check a certificate with ssh-keygen -Q -f FILE CERT."
        ),
    )
    krl.add_argument("-o", "--output", type=Path, required=True, metavar="FILE",
                     help=f"{STDIO}: stdout (binary)")  # fmt: skip
    krl.set_defaults(handler=cmd_machine_krl)
    known_hosts = machine.add_parser(
        "known-hosts",
        help="the machine lane's known_hosts line, for workloads to pin",
        description=(
            "Print the known_hosts line of the machine lane's host key, so workloads can "
            "use StrictHostKeyChecking=yes from their first connection."
        ),
    )
    known_hosts.add_argument(
        "--host", help="the name or address workloads connect to (default: the listen address)"
    )
    known_hosts.set_defaults(handler=cmd_machine_known_hosts)


# -- the registry --------------------------------------------------------------


def cmd_machine_add(args: argparse.Namespace) -> int:
    from gateway.domain.machines.registry import parse_scope_target

    with open_operator(args) as actions:
        review_by = (
            parse_iso_time(args.review_by, "--review-by", expected="an ISO date")
            if args.review_by
            else None
        )
        view = actions.add_machine(
            args.name, kind=args.kind, owner=args.owner,
            tech_owner=args.tech_owner, purpose=args.purpose,
            targets=[parse_scope_target(t, args.loaded_config) for t in args.target],
            commands=args.command, sources=args.source, allow_pty=args.allow_pty,
            allow_sftp=args.allow_sftp, max_ttl_seconds=parse_duration(args.max_ttl, "--max-ttl"),
            review_by=review_by, sftp_paths=args.sftp_path,
        )  # fmt: skip
    print(f"registered {view.name} ({view.kind}); certificates up to {view.max_ttl_seconds // 60}m")
    return 0


def cmd_machine_list(args: argparse.Namespace) -> int:
    from collections import Counter
    from datetime import UTC, datetime

    with open_operator(args) as actions:
        machines = actions.machines()
        outstanding = Counter(cert.nhi for cert in actions.outstanding_certificates())
    now = datetime.now(UTC)
    if args.json:
        for machine in machines:
            print_json_line({**_machine_summary(machine, now),
                             "certificates": outstanding[machine.name]})  # fmt: skip
        return 0
    if not machines:
        print("no machine identities (add one with 'pamgate machine add')")
        return 0
    rows = []
    for machine in machines:
        review = f"{machine.review_by:%Y-%m-%d}" if machine.review_by else "-"
        if machine.review_overdue(now):
            review += " OVERDUE"
        used = f"{machine.last_used_at:%Y-%m-%d %H:%M}" if machine.last_used_at else "never"
        certs = str(outstanding[machine.name])
        rows.append((machine.name, machine.kind, machine.status, clip(machine.owner),
                     clip(machine.tech_owner), used, certs, review))  # fmt: skip
    header = ("NAME", "KIND", "STATUS", "OWNER", "TECH OWNER", "LAST LOGIN", "CERTS", "REVIEW BY")
    print_table(rows, header=header)
    return 0


def _machine_summary(machine: MachineView, now: datetime) -> dict[str, object]:
    """What ``machine list --json`` says of an NHI (and ``machine show --json`` begins with)."""
    return {
        "name": machine.name, "kind": machine.kind, "status": machine.status,
        "owner": machine.owner, "tech_owner": machine.tech_owner,
        "last_login": machine.last_used_at, "review_by": machine.review_by,
        "review_overdue": machine.review_overdue(now),
    }  # fmt: skip


def _machine_document(
    machine: MachineView, certificates: list[OutstandingCertificate], now: datetime
) -> dict[str, object]:
    """``machine show --json``: the NHI in full, with its outstanding certificates."""
    return {
        **_machine_summary(machine, now),
        "status_reason": machine.status_reason, "purpose": machine.purpose,
        "targets": [{"target": t.target, "account": t.account} for t in machine.targets],
        "commands": list(machine.commands), "sources": list(machine.sources),
        "allow_pty": machine.allow_pty, "allow_sftp": machine.allow_sftp,
        "sftp_paths": None if machine.sftp_paths is None else list(machine.sftp_paths),
        "max_ttl_seconds": machine.max_ttl_seconds, "created_at": machine.created_at,
        "outstanding": [{"serial": cert.serial, "key_id": cert.key_id,
                         "key_fingerprint": cert.key_fingerprint,
                         "valid_before": cert.valid_before} for cert in certificates],
    }  # fmt: skip


def cmd_machine_show(args: argparse.Namespace) -> int:
    from datetime import UTC, datetime

    with open_operator(args) as actions:
        machine = actions.machine(args.name)
        certificates = actions.outstanding_certificates(machine.name)
    now = datetime.now(UTC)
    if args.json:
        print_json_document(_machine_document(machine, certificates, now))
        return 0
    status = machine.status + (f" ({machine.status_reason})" if machine.status_reason else "")
    sftp = "allowed" if machine.allow_sftp else "no"
    if machine.allow_sftp and machine.sftp_paths is not None:
        sftp += " in " + ", ".join(machine.sftp_paths)
    review = f"{machine.review_by:%Y-%m-%d}" if machine.review_by else "-"
    if machine.review_overdue(now):
        review += " OVERDUE"
    used = f"{machine.last_used_at:%Y-%m-%d %H:%M:%S}Z" if machine.last_used_at else "never"
    first, *more = machine.commands or [""]
    print_table([
        ("name", machine.name), ("kind", machine.kind), ("status", status),
        ("owner", machine.owner), ("tech owner", machine.tech_owner),
        ("purpose", machine.purpose),
        ("targets", ", ".join(f"{t.account}@{t.target}" for t in machine.targets)),
        ("commands", first), *(("", command) for command in more),
        ("sources", ", ".join(machine.sources) or "anywhere"),
        ("pty", "allowed" if machine.allow_pty else "no"), ("sftp", sftp),
        ("max ttl", f"{machine.max_ttl_seconds // 60}m"), ("review by", review),
        ("last login", used), ("outstanding", f"{len(certificates)} certificate(s)"),
    ])  # fmt: skip
    print_table(
        ((f"serial {cert.serial}", f"valid until {cert.valid_before:%Y-%m-%d %H:%M:%S}Z",
          cert.key_fingerprint or "") for cert in certificates),
        indent="  ",
    )  # fmt: skip
    return 0


def cmd_machine_status(args: argparse.Namespace) -> int:
    with open_operator(args) as actions:
        if args.status == "offboarded":
            revoked = actions.offboard_machine(args.name, args.reason)
            print(f"{args.name} is offboarded; {len(revoked)} outstanding certificate(s) revoked")
            print("publish the revocations to targets with 'pamgate machine krl -o FILE'")
            return 0
        view = actions.set_machine_status(args.name, args.status, args.reason)
    print(f"{view.name} is now {view.status}")
    return 0


# -- certificates ---------------------------------------------------------------


def cmd_machine_issue(args: argparse.Namespace) -> int:
    refuse_host_path(args, args.pubkey, "--pubkey")
    refuse_host_path(args, args.output, "-o")
    to_file = args.output is not None and not is_stdio(args.output)
    with open_operator(args) as actions:
        key = read_key_file(args.pubkey)
        ttl = parse_duration(args.ttl, "--ttl")
        if to_file:
            _check_writable(args.output)  # before signing: no certificate nobody received
        signed = actions.issue_certificate(args.name, key, ttl)
    if to_file:
        try:
            args.output.write_text(signed.certificate + "\n")
        except OSError as exc:
            print(signed.certificate)
            raise PamgateError(
                f"cannot write {args.output}: {exc.strerror}; the certificate (serial "
                f"{signed.serial}) is printed above instead"
            ) from None
        print(f"wrote {args.output} (serial {signed.serial}, valid {args.ttl}, principal "
              f"{args.name})", file=sys.stderr)  # fmt: skip
    else:
        print(signed.certificate)
    return 0


def cmd_machine_token(args: argparse.Namespace) -> int:
    with open_operator(args) as actions:
        token = actions.create_join_token(
            args.name, ttl_seconds=parse_duration(args.ttl, "--ttl"), uses=args.uses
        )
    print(token)
    print(f"join token for {args.name}: {args.uses} use(s) within {args.ttl}; shown only once",
          file=sys.stderr)  # fmt: skip
    return 0


def cmd_machine_revoke(args: argparse.Namespace) -> int:
    refuse_host_path(args, args.key, "--key")
    with open_operator(args) as actions:
        revoked = actions.revoke_certificates(
            reason=args.reason, name=args.name, serial=args.serial, key_id=args.key_id,
            key_line=read_key_file(args.key) if args.key else None,
        )  # fmt: skip
    if not revoked:
        print("nothing new to revoke (already revoked, or nothing outstanding)")
        return 0
    for entry in revoked:
        note = "" if entry.nhi or args.key else (
            " (pamgate issued no such certificate; revoked anyway, in case one was signed "
            "with the CA key directly)"
        )  # fmt: skip
        print(f"revoked {entry.kind.replace('_', ' ')} {entry.value[:80]}{note}")
    print("publish the revocations to targets with 'pamgate machine krl -o FILE'")
    return 0


def cmd_machine_krl(args: argparse.Namespace) -> int:
    import tempfile

    refuse_host_path(args, args.output, "-o")
    if not is_stdio(args.output):
        _check_writable(args.output)
        with open_operator(args) as actions:
            written = actions.write_krl(args.output)
        print(f"wrote {args.output} with {written.entries} revocation(s)")
    else:
        with open_operator(args) as actions, tempfile.TemporaryDirectory() as folder:
            built = Path(folder) / "krl"
            written = actions.write_krl(built)
            sys.stdout.buffer.write(built.read_bytes())
            sys.stdout.buffer.flush()
        print(f"wrote the KRL to stdout with {written.entries} revocation(s)", file=sys.stderr)
    for entry, why in written.left_out:
        print(f"warning: left out {entry.kind.replace('_', ' ')} {entry.value[:80]!r}: {why} "
              "(the gateway still refuses it)", file=sys.stderr)  # fmt: skip
    return 0


def cmd_machine_known_hosts(args: argparse.Namespace) -> int:
    listener = args.loaded_config.listeners.machine
    host = args.host or listener.address
    if host in ("0.0.0.0", "::", ""):
        raise PamgateError(
            f"the machine lane listens on {listener.address}: give --host, the name or address "
            "workloads use to reach it"
        )
    with open_operator(args) as actions:
        key = actions.machine_host_key()
    print(f"{host if listener.port == 22 else f'[{host}]:{listener.port}'} {key}")
    return 0


def _check_writable(path: Path) -> None:
    """PamgateError unless ``path`` can be written as a file."""
    parent = path.parent if str(path.parent) else Path(".")
    if path.is_dir():
        raise PamgateError(f"{path} is a directory: give a file name")
    if not parent.is_dir():
        raise PamgateError(f"cannot write {path}: the directory {parent} does not exist")
    if not os.access(parent, os.W_OK) or (path.exists() and not os.access(path, os.W_OK)):
        raise PamgateError(f"cannot write {path}: permission denied")
