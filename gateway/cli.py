"""The ``pamgate`` command line.

Every command takes ``--config PATH`` (or ``$PAMGATE_CONFIG``, or
``./pamgate.toml``). Errors are printed as ``pamgate: error: ...`` and exit
with status 1 (2 for usage and configuration errors).
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import os
import socket
import sys
from collections.abc import Callable, Coroutine, Sequence
from pathlib import Path
from typing import Any

from gateway.config import (
    CONFIG_ENV_VAR,
    GatewayConfig,
    find_config_path,
    load_config,
    parse_duration,
    parse_since,
)
from gateway.errors import ConfigError, PamgateError
from recordings.sanitize import one_line

EXAMPLE_CONFIG = """\
# pamgate gateway configuration (written by 'pamgate init').
# Every setting is described in config/pamgate.example.toml in the source tree.

[gateway]
name = "pamgate"
data_dir = "."          # relative to this file

[listeners.human]
address = "127.0.0.1"
port = 2222

# Add targets like this, then restart 'pamgate serve':
# [[targets]]
# name = "web01"
# host = "10.0.0.5"
# port = 22
# accounts = ["root", "deploy"]
# default_account = "deploy"
# host_keys = ["ssh-ed25519 AAAA..."]   # ssh-keyscan -t ed25519 10.0.0.5
#
# [[rules]]
# id = "ops-web01"
# groups = ["ops"]
# targets = ["web01"]
# mode = "allow"
"""


def build_parser() -> argparse.ArgumentParser:
    """The argument parser for all commands."""
    parser = argparse.ArgumentParser(
        prog="pamgate",
        description=(
            "pamgate: a privileged-access gateway for SSH. Admins log in with a password or "
            "key plus a TOTP code; every session gets a fresh, minutes-long certificate to "
            "the target."
        ),
        epilog=(
            f"The config file is --config PATH (before or after the command), else "
            f"${CONFIG_ENV_VAR}, else ./pamgate.toml."
        ),
    )
    parser.add_argument("--config", metavar="PATH", help="gateway config file (TOML)")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    commands.add_parser(
        "init",
        help="create the data directory, keys, upstream CA and database",
        description=(
            "Create the data directory, the human-lane host key, the upstream CA and the "
            "database. Writes a starter config file if there is none. Safe to run again: "
            "existing keys are never overwritten."
        ),
    ).set_defaults(handler=cmd_init)

    commands.add_parser(
        "serve",
        help="run the gateway",
        description="Run the gateway in the foreground until SIGINT or SIGTERM.",
    ).set_defaults(handler=cmd_serve)

    demo = commands.add_parser(
        "demo",
        help="run a demo gateway with a real OpenSSH target and two users",
        description=(
            "Start a gateway on 127.0.0.1 with one demo target (a real OpenSSH sshd with a "
            "shell, trusting the gateway's upstream CA) and two demo users, then print the "
            "ssh command, passwords and TOTP secrets. State is kept in --data-dir, which "
            "holds a config file usable with every other command. Runs until Ctrl-C."
        ),
    )
    demo.add_argument(
        "--data-dir", type=Path, default=Path("pamgate-demo"), help="default: ./pamgate-demo"
    )
    demo.add_argument(
        "--port", type=int, help="human lane port on first run (default: 2222, or a free port)"
    )
    demo.add_argument(
        "--machine-port",
        type=int,
        help="machine lane port on first run (default: 2223, or a free port)",
    )
    demo.set_defaults(handler=cmd_demo, needs_config=False)

    console = commands.add_parser(
        "console",
        help="the terminal console for approvers, auditors and administrators",
        description=(
            "Open the Textual console: sign in with your pamgate user name, password and TOTP "
            "code. What you can do follows your groups ([console] in the config): approvers "
            "decide requests, auditors watch sessions, replay recordings and read the audit "
            "trails, admins terminate sessions and manage identities. It locks itself after "
            "[console] idle_lock without input."
        ),
    )
    console.set_defaults(handler=cmd_console)

    _add_database_commands(commands)

    _add_user_commands(commands)

    ca = commands.add_parser("ca", help="certificate authorities").add_subparsers(
        dest="ca_command", metavar="SUBCOMMAND", required=True
    )
    show = ca.add_parser(
        "show",
        help="print a CA public key",
        description=(
            "Print a CA's public key as one OpenSSH line. For 'upstream', put it in the "
            "target's TrustedUserCAKeys file."
        ),
    )
    show.add_argument(
        "which", choices=["upstream", "machine"],
        help="upstream: for targets' TrustedUserCAKeys; machine: signs NHI certificates",
    )  # fmt: skip
    show.set_defaults(handler=cmd_ca_show)

    _add_audit_commands(commands)
    _add_recording_commands(commands)
    _add_request_commands(commands)
    _add_machine_commands(commands)

    policy = commands.add_parser("policy", help="inspect the access policy").add_subparsers(
        dest="policy_command", metavar="SUBCOMMAND", required=True
    )
    check = policy.add_parser(
        "check",
        help="show the decision and the rule for a user and target",
        description=(
            "Evaluate the access policy as the gateway would for USER reaching TARGET "
            "(and ACCOUNT, default: the target's default account), and print the decision "
            "and the rule that made it."
        ),
    )
    check.add_argument("user")
    check.add_argument("destination", metavar="TARGET[:ACCOUNT]")
    check.add_argument(
        "--from",
        dest="source",
        default="127.0.0.1",
        metavar="ADDR",
        help="source address (default 127.0.0.1)",
    )
    check.add_argument("--at", metavar="TIME", help="ISO date/time, UTC if no zone (default now)")
    check.set_defaults(handler=cmd_policy_check)

    commands.add_parser(
        "check-config",
        help="validate the config file and exit",
        description="Load and validate the config file; print problems with file and key.",
    ).set_defaults(handler=cmd_check_config)
    return parser


def _add_database_commands(commands: argparse._SubParsersAction) -> None:
    db = commands.add_parser("db", help="the database schema").add_subparsers(
        dest="db_command", metavar="ACTION", required=True
    )
    db.add_parser(
        "upgrade",
        help="apply pending schema migrations",
        description=(
            "Bring the database schema to this release of pamgate, one revision at a time, "
            "printing each. A database created before migrations is adopted. Stop the "
            "gateway nodes first; they refuse to start on an outdated schema."
        ),
    ).set_defaults(handler=cmd_db_upgrade)
    revision = db.add_parser(
        "revision",
        help="write a migration for model changes (developers)",
        description=(
            "Compare gateway/store/models.py with the newest revision and write a new revision "
            "file under gateway/store/migrations/versions (needs a source checkout)."
        ),
    )
    revision.add_argument("-m", "--message", required=True, help="what the revision adds")
    revision.set_defaults(handler=cmd_db_revision, needs_config=False)
    commands.add_parser(
        "status",
        help="nodes, heartbeats, live sessions and database health",
        description=(
            "Show the database (reachable, round trip, schema revision) and every gateway "
            "node sharing it: status, age of its last heartbeat and live sessions. Exits 1 "
            "if the database is unreachable or its schema is outdated."
        ),
    ).set_defaults(handler=cmd_status)


def _add_user_commands(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    user = commands.add_parser("user", help="manage human users").add_subparsers(
        dest="user_command", metavar="SUBCOMMAND", required=True
    )
    add = user.add_parser(
        "add",
        help="create a user and print their TOTP enrolment",
        description=(
            "Create a user. The first factor is a password, a registered SSH key, or both; "
            "the second is always TOTP. Prints the otpauth:// URI (and a QR code on a "
            "terminal). Without --password-stdin the password is asked for on the terminal."
        ),
    )
    add.add_argument("name")
    add.add_argument("--group", action="append", default=[], help="group (repeatable)")
    add.add_argument("--password-stdin", action="store_true", help="read the password from stdin")
    add.add_argument(
        "--ssh-key",
        type=Path,
        action="append",
        default=[],
        metavar="FILE",
        help="register the public key in FILE (repeatable)",
    )
    add.add_argument("--no-password", action="store_true", help="key-only user: needs --ssh-key")
    add.set_defaults(handler=cmd_user_add)

    user.add_parser("list", help="list users").set_defaults(handler=cmd_user_list)
    for name, help_text, handler in (
        ("disable", "disable a user (they can no longer log in)", cmd_user_disable),
        ("enable", "enable a disabled user", cmd_user_enable),
        ("reset-mfa", "give a user a new TOTP secret", cmd_user_reset_mfa),
        ("unlock", "clear a user's failed-login lockout", cmd_user_unlock),
    ):
        sub = user.add_parser(
            name, help=help_text, description=help_text[0].upper() + help_text[1:] + "."
        )
        sub.add_argument("name")
        sub.set_defaults(handler=handler)
    set_groups = user.add_parser(
        "set-groups",
        help="replace a user's groups",
        description="Replace a user's groups (the policy's rules refer to groups).",
    )
    set_groups.add_argument("name")
    set_groups.add_argument("--group", action="append", default=[], help="group (repeatable)")
    set_groups.set_defaults(handler=cmd_user_set_groups)
    passwd = user.add_parser(
        "passwd",
        help="set a user's password",
        description="Set a user's password (asked on the terminal).",
    )
    passwd.add_argument("name")
    passwd.add_argument(
        "--password-stdin", action="store_true", help="read the password from stdin"
    )
    passwd.set_defaults(handler=cmd_user_passwd)
    add_key = user.add_parser(
        "add-key",
        help="register an SSH public key for a user",
        description="Register an SSH public key (first factor) for a user.",
    )
    add_key.add_argument("name")
    add_key.add_argument("key_file", type=Path, metavar="FILE")
    add_key.set_defaults(handler=cmd_user_add_key)


def _add_audit_commands(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
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
        help="checkpoint file to check against (default: the data directory's; "
        "give an off-box copy to detect a rewritten chain)",
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
    export.add_argument("-o", "--output", type=Path, metavar="FILE", help="default: stdout")
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
    files.add_argument("--json", action="store_true", help="one JSON object per line")
    files.set_defaults(handler=cmd_audit_files)
    audit.add_parser(
        "checkpoint",
        help="sign the trails' head hashes now",
        description=(
            "Sign the current head hash of each trail with the gateway's audit key and append "
            "it to DATA_DIR/audit/checkpoints.jsonl. Copy that file off the box: verification "
            "against an old copy detects a truncated or rewritten chain."
        ),
    ).set_defaults(handler=cmd_audit_checkpoint)


def _add_recording_commands(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
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
    search.set_defaults(handler=cmd_recordings_search)
    show = recordings.add_parser(
        "commands",
        help="a session's command log",
        description="Print the commands extracted from a session.",
    )
    show.add_argument("session")
    show.set_defaults(handler=cmd_recordings_commands)
    export = recordings.add_parser(
        "export",
        help="write a plain asciicast v2 file",
        description="Write a session's recording as a plain (uncompressed) asciicast v2 file.",
    )
    export.add_argument("session")
    export.add_argument("-o", "--output", type=Path, required=True, metavar="FILE.cast")
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


def _add_request_commands(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    requests = commands.add_parser(
        "request",
        help="list, approve and deny access requests",
        description=(
            "Access requests come from logins under approval rules. Approving or denying "
            "needs the approver's own password and TOTP code (--as USER); nobody decides "
            "their own request."
        ),
    ).add_subparsers(dest="request_command", metavar="SUBCOMMAND", required=True)
    listing = requests.add_parser(
        "list", help="requests, newest first", description="List requests, newest first."
    )
    listing.add_argument(
        "--all", action="store_true", help="include decided ones (default: pending)"
    )
    listing.set_defaults(handler=cmd_request_list)
    for name, handler in (("approve", cmd_request_approve), ("deny", cmd_request_deny)):
        sub = requests.add_parser(
            name, help=f"{name} a request as an approver",
            description=f"{name.capitalize()} request N, authenticated as the approver.",
        )  # fmt: skip
        sub.add_argument("request_id", type=int, metavar="N")
        sub.add_argument("--comment", default="", help="shown to the requester"
                         + (" (required)" if name == "deny" else ""))  # fmt: skip
        _add_approver_options(sub)
        sub.set_defaults(handler=handler)

    breakglass = commands.add_parser(
        "breakglass",
        help="list and review break-glass use",
        description=(
            "Break-glass gives immediate, short access with a justification; every use must "
            "be reviewed afterwards by someone else in a reviewer group."
        ),
    ).add_subparsers(dest="breakglass_command", metavar="SUBCOMMAND", required=True)
    cases = breakglass.add_parser(
        "list",
        help="cases, unreviewed first",
        description="List break-glass cases, unreviewed first.",
    )
    cases.add_argument("--unreviewed", action="store_true", help="only cases without a verdict")
    cases.add_argument("--overdue", action="store_true", help="only unreviewed cases past due")
    cases.set_defaults(handler=cmd_breakglass_list)
    review = breakglass.add_parser(
        "review", help="record a verdict on a case",
        description="Record a verdict on break-glass case N, authenticated as the reviewer.",
    )  # fmt: skip
    review.add_argument("case_id", type=int, metavar="N")
    review.add_argument("--verdict", choices=["justified", "unjustified"], required=True)
    review.add_argument("--note", required=True, help="why (kept in the audit trail)")
    _add_approver_options(review)
    review.set_defaults(handler=cmd_breakglass_review)

    grants = commands.add_parser("grant", help="list and revoke grants").add_subparsers(
        dest="grant_command", metavar="SUBCOMMAND", required=True
    )
    grant_list = grants.add_parser(
        "list", help="grants, newest first", description="List grants, newest first."
    )
    grant_list.add_argument("--active", action="store_true", help="only current ones")
    grant_list.set_defaults(handler=cmd_grant_list)
    revoke = grants.add_parser(
        "revoke", help="end a grant now (its sessions close within 2 s)",
        description="Revoke grant N: live sessions under it are closed within about 2 seconds.",
    )  # fmt: skip
    revoke.add_argument("grant_id", type=int, metavar="N")
    revoke.add_argument("--reason", required=True)
    revoke.set_defaults(handler=cmd_grant_revoke)


def _add_machine_commands(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
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
                     help="hold SFTP, scp and rsync to this directory (repeatable; default: "
                     "anywhere the account can go)")  # fmt: skip
    add.set_defaults(handler=cmd_machine_add)
    machine.add_parser("list", help="NHIs with owners, status and review dates",
                       description="List NHIs; overdue reviews are flagged.").set_defaults(
        handler=cmd_machine_list)  # fmt: skip
    show = machine.add_parser("show", help="one NHI in full", description="Show one NHI in full.")
    show.add_argument("name")
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
                       help="the workload's public key (.pub)")  # fmt: skip
    issue.add_argument("--ttl", default="5m", help="lifetime (default 5m)")
    issue.add_argument("-o", "--output", type=Path, metavar="CERTFILE")
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
    what.add_argument("--serial", type=int, help="one certificate serial")
    what.add_argument("--key-id", help="every certificate with this key id")
    what.add_argument("--key", type=Path, metavar="FILE", help="every certificate on this key")
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
    krl.add_argument("-o", "--output", type=Path, required=True, metavar="FILE")
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


def _add_approver_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--as",
        dest="approver",
        required=True,
        metavar="USER",
        help="who decides: a pamgate user, authenticated with their password and TOTP code",
    )
    parser.add_argument(
        "--password-stdin", action="store_true", help="read the approver's password from stdin"
    )
    parser.add_argument("--totp", metavar="CODE", help="the approver's current TOTP code")


def _trails():  # noqa: ANN202 - the Trail enum, imported lazily
    from gateway.domain.audit.trail import Trail

    return list(Trail)


# -- command handlers -------------------------------------------------------


def cmd_init(args: argparse.Namespace) -> int:
    from gateway.datadir import initialize

    path = find_config_path(args.config)
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(EXAMPLE_CONFIG)
        print(f"wrote starter config {path}")
    config = load_config(path)
    for line in initialize(config, actor=_actor()):
        print(line)
    print(f"upstream CA public key (for targets' TrustedUserCAKeys): {_upstream_ca_line(config)}")
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    from gateway.ssh.node import GatewayNode, configure_logging, run_until_signalled

    config: GatewayConfig = args.loaded_config
    configure_logging(config)
    node = GatewayNode(config)
    run_event_loop(run_until_signalled(node))
    return 0


def run_event_loop(main: Coroutine[Any, Any, None]) -> None:
    """Run the gateway's event loop: uvloop when installed (the relay moves bytes
    with less overhead per packet there), else asyncio's own loop."""
    try:
        import uvloop
    except ImportError:
        asyncio.run(main)
        return
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(main)


def cmd_demo(args: argparse.Namespace) -> int:
    from gateway.devtools.demo import run_demo

    run_demo(args.data_dir, gateway_port=args.port, machine_port=args.machine_port)
    return 0


def cmd_db_upgrade(args: argparse.Namespace) -> int:
    from gateway.store.database import Store

    config: GatewayConfig = args.loaded_config
    store = Store(config.database_url)
    try:
        before = store.schema_state()
        print(f"database schema: {before.describe()}")
        applied = store.upgrade(progress=lambda line: print(line, flush=True))
        if applied:
            print(f"upgraded to revision {applied[-1]} ({len(applied)} applied)")
        else:
            print("nothing to do")
    finally:
        store.dispose()
    return 0


def cmd_db_revision(args: argparse.Namespace) -> int:
    from gateway.store.schema import new_revision

    print(f"wrote {new_revision(args.message)}")
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    from gateway.domain.health import deployment_status
    from gateway.services import GatewayServices

    config: GatewayConfig = args.loaded_config
    services = GatewayServices.open(config)
    try:
        status = deployment_status(services.store, services.nodes)
    finally:
        services.close()
    for line in status.lines(config.node.heartbeat_timeout_seconds):
        print(line)
    return 0 if status.healthy else 1


def cmd_console(args: argparse.Namespace) -> int:
    from tui.app import PamgateConsole

    if not sys.stdin.isatty() or not sys.stdout.isatty():
        raise PamgateError("the console needs a terminal (run it from an interactive shell)")
    PamgateConsole(_services(args)).run()
    return 0


def cmd_user_add(args: argparse.Namespace) -> int:
    from gateway.domain.enrolment import describe_enrolment

    keys = [_read_key_file(path) for path in args.ssh_key]
    if args.no_password:
        if not keys:
            raise PamgateError("--no-password needs at least one --ssh-key")
        password = None
    else:
        password = _read_password(args.password_stdin, confirm=True)
    users = _services(args).users
    enrolment = users.add_user(
        args.name, actor=_actor(), groups=args.group, password=password, public_keys=keys
    )
    print(f"created user {args.name} (groups: {', '.join(args.group) or 'none'})")
    config: GatewayConfig = args.loaded_config
    used = {group for rule in config.rules for group in rule.groups}
    for group in sorted(set(args.group) - used):
        print(f"warning: no access rule mentions group {group!r} yet", file=sys.stderr)
    print(describe_enrolment(enrolment, sys.stdout))
    return 0


def cmd_user_list(args: argparse.Namespace) -> int:
    users = _services(args).users.list_users()
    if not users:
        print("no users (add one with 'pamgate user add NAME')")
        return 0
    print(f"{'NAME':<20} {'STATUS':<9} {'FACTORS':<18} GROUPS")
    for user in users:
        factors = "+".join(
            f
            for f, present in (
                ("password", user.has_password),
                ("key", bool(user.key_fingerprints)),
            )
            if present
        )
        status = "disabled" if user.disabled else "enabled"
        print(f"{user.name:<20} {status:<9} {factors + '+totp':<18} {', '.join(user.groups)}")
    return 0


def cmd_user_disable(args: argparse.Namespace) -> int:
    _services(args).users.set_disabled(args.name, True, actor=_actor())
    print(f"disabled {args.name}")
    return 0


def cmd_user_enable(args: argparse.Namespace) -> int:
    _services(args).users.set_disabled(args.name, False, actor=_actor())
    print(f"enabled {args.name}")
    return 0


def cmd_user_reset_mfa(args: argparse.Namespace) -> int:
    from gateway.domain.enrolment import describe_enrolment

    enrolment = _services(args).users.reset_mfa(args.name, actor=_actor())
    print(f"reset TOTP for {args.name}; the old secret no longer works")
    print(describe_enrolment(enrolment, sys.stdout))
    return 0


def cmd_user_unlock(args: argparse.Namespace) -> int:
    services = _services(args)
    if services.users.get(args.name) is None:
        raise PamgateError(f"no user named {args.name!r}")
    services.limiter.unlock(args.name, actor=_actor())
    print(f"cleared failed-login lockout for {args.name}")
    return 0


def cmd_user_set_groups(args: argparse.Namespace) -> int:
    _services(args).users.set_groups(args.name, args.group, actor=_actor())
    print(f"groups of {args.name}: {', '.join(sorted(set(args.group))) or 'none'}")
    return 0


def cmd_user_passwd(args: argparse.Namespace) -> int:
    users = _services(args).users
    if users.get(args.name) is None:
        raise PamgateError(f"no user named {args.name!r}")
    users.set_password(args.name, _read_password(args.password_stdin, confirm=True), actor=_actor())
    print(f"password changed for {args.name}")
    return 0


def cmd_user_add_key(args: argparse.Namespace) -> int:
    fingerprint = _services(args).users.add_key(
        args.name, _read_key_file(args.key_file), actor=_actor()
    )
    print(f"registered key {fingerprint} for {args.name}")
    return 0


def cmd_ca_show(args: argparse.Namespace) -> int:
    if args.which == "machine":
        print(_services(args).machine_ca.public_key_line())
    else:
        print(_upstream_ca_line(args.loaded_config))
    return 0


def cmd_machine_add(args: argparse.Namespace) -> int:
    from datetime import UTC, datetime

    from gateway.domain.machines.registry import parse_scope_target

    services = _services(args)
    review_by = None
    if args.review_by:
        try:
            review_by = datetime.fromisoformat(args.review_by)
        except ValueError:
            raise PamgateError(f"--review-by {args.review_by!r}: give an ISO date") from None
        review_by = review_by if review_by.tzinfo else review_by.replace(tzinfo=UTC)
    view = services.machines.add(
        args.name, actor=_actor(), kind=args.kind, owner=args.owner, tech_owner=args.tech_owner,
        purpose=args.purpose,
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

    services = _services(args)
    machines = services.machines.list()
    if not machines:
        print("no machine identities (add one with 'pamgate machine add')")
        return 0
    outstanding = Counter(cert.nhi for cert in services.machine_revocations.outstanding())
    now = datetime.now(UTC)
    rows = [("NAME", "KIND", "STATUS", "OWNER", "TECH OWNER", "LAST LOGIN", "CERTS", "REVIEW BY")]
    for machine in machines:
        review = f"{machine.review_by:%Y-%m-%d}" if machine.review_by else "-"
        if machine.review_overdue(now):
            review += " OVERDUE"
        used = f"{machine.last_used_at:%Y-%m-%d %H:%M}" if machine.last_used_at else "never"
        certs = str(outstanding[machine.name])
        rows.append((machine.name, machine.kind, machine.status, _clip(machine.owner),
                     _clip(machine.tech_owner), used, certs, review))  # fmt: skip
    widths = [max(len(row[column]) for row in rows) for column in range(len(rows[0]))]
    for row in rows:
        cells = (cell.ljust(width) for cell, width in zip(row, widths, strict=True))
        print("  ".join(cells).rstrip())
    return 0


def _clip(text: str, width: int = 24) -> str:
    """Shorten free text for a table column, showing that it was cut."""
    return text if len(text) <= width else text[: width - 1] + "…"


def cmd_machine_show(args: argparse.Namespace) -> int:
    services = _services(args)
    machine = services.machines.get(args.name)
    from datetime import UTC, datetime

    status = machine.status + (f" ({machine.status_reason})" if machine.status_reason else "")
    print(f"name        {machine.name}\nkind        {machine.kind}\nstatus      {status}")
    print(f"owner       {machine.owner}\ntech owner  {machine.tech_owner}")
    print(f"purpose     {machine.purpose}")
    print("targets     " + ", ".join(f"{t.account}@{t.target}" for t in machine.targets))
    print("commands    " + "\n            ".join(machine.commands))
    print("sources     " + (", ".join(machine.sources) or "anywhere"))
    print(f"pty         {'allowed' if machine.allow_pty else 'no'}")
    sftp = "allowed" if machine.allow_sftp else "no"
    if machine.allow_sftp and machine.sftp_paths is not None:
        sftp += " in " + ", ".join(machine.sftp_paths)
    print(f"sftp        {sftp}")
    print(f"max ttl     {machine.max_ttl_seconds // 60}m")
    review = f"{machine.review_by:%Y-%m-%d}" if machine.review_by else "-"
    if machine.review_overdue(datetime.now(UTC)):
        review += " OVERDUE"
    print(f"review by   {review}")
    used = f"{machine.last_used_at:%Y-%m-%d %H:%M:%S}Z" if machine.last_used_at else "never"
    print(f"last login  {used}")
    certificates = services.machine_revocations.outstanding(machine.name)
    print(f"outstanding {len(certificates)} certificate(s)")
    for cert in certificates:
        print(f"  serial {cert.serial:<6} valid until {cert.valid_before:%Y-%m-%d %H:%M:%S}Z  "
              f"{cert.key_fingerprint or ''}")  # fmt: skip
    return 0


def cmd_machine_status(args: argparse.Namespace) -> int:
    services = _services(args)
    if args.status == "offboarded":
        revoked = services.machine_revocations.offboard(
            args.name, actor=_actor(), reason=args.reason
        )
        print(f"{args.name} is offboarded; {len(revoked)} outstanding certificate(s) revoked")
        print("publish the revocations to targets with 'pamgate machine krl -o FILE'")
        return 0
    view = services.machines.set_status(args.name, args.status, actor=_actor(), reason=args.reason)
    print(f"{view.name} is now {view.status}")
    return 0


def cmd_machine_issue(args: argparse.Namespace) -> int:
    services = _services(args)
    key = _read_key_file(args.pubkey)
    ttl = parse_duration(args.ttl, "--ttl")
    if args.output:
        _check_writable(args.output)  # before signing: no certificate nobody received
    signed = services.machine_credentials.issue(args.name, key, ttl, actor=_actor())
    if args.output:
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
    token = _services(args).machine_credentials.create_join_token(
        args.name, ttl_seconds=parse_duration(args.ttl, "--ttl"), uses=args.uses, actor=_actor()
    )
    print(token)
    print(f"join token for {args.name}: {args.uses} use(s) within {args.ttl}; shown only once",
          file=sys.stderr)  # fmt: skip
    return 0


def cmd_machine_revoke(args: argparse.Namespace) -> int:
    services = _services(args)
    revoked = services.machine_revocations.revoke(
        actor=_actor(), reason=args.reason, name=args.name, serial=args.serial,
        key_id=args.key_id, key_line=_read_key_file(args.key) if args.key else None,
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


def cmd_machine_known_hosts(args: argparse.Namespace) -> int:
    from gateway.datadir import DataDir

    listener = args.loaded_config.listeners.machine
    host = args.host or listener.address
    if host in ("0.0.0.0", "::", ""):
        raise PamgateError(
            f"the machine lane listens on {listener.address}: give --host, the name or address "
            "workloads use to reach it"
        )
    from gateway.domain.identities import parse_public_key_line

    key_path = DataDir(args.loaded_config.data_dir).machine_host_key
    try:
        key, _, _ = parse_public_key_line(key_path.with_name(key_path.name + ".pub").read_text())
    except OSError as exc:
        raise PamgateError(f"cannot read the machine lane host key: {exc.strerror}") from None
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


def cmd_machine_krl(args: argparse.Namespace) -> int:
    _check_writable(args.output)
    count = _services(args).machine_revocations.write_krl(args.output)
    print(f"wrote {args.output} with {count} revocation(s)")
    return 0


def cmd_audit_verify(args: argparse.Namespace) -> int:
    from gateway.domain.audit.trail import Trail

    services = _services(args)
    trails = [Trail(args.trail)] if args.trail else list(Trail)
    checkpoints = services.checkpoints.read(args.checkpoints)
    if args.checkpoints is not None and not args.checkpoints.exists():
        raise PamgateError(f"checkpoint file {args.checkpoints} does not exist")
    failed = False
    for trail in trails:
        result = services.audit.verify(trail, progress=_progress(f"{trail}: verified"))
        problem = (
            result.problem if not result.ok else services.checkpoints.problems(trail, checkpoints)
        )
        if problem:
            failed = True
            print(f"{trail}: BROKEN: {problem}")
        else:
            print(f"{trail}: OK, {result.count} events, head {result.head_hash[:16]}")
    if checkpoints:
        outcome = "some trails disagree" if failed else "all agree"
        print(f"compared with {len(checkpoints)} signed checkpoints: {outcome}")
    return 1 if failed else 0


def cmd_audit_export(args: argparse.Namespace) -> int:
    from gateway.domain.audit.trail import Trail

    services = _services(args)
    since = parse_since(args.since) if args.since else None
    out = open(args.output, "w", encoding="utf-8") if args.output else sys.stdout  # noqa: SIM115
    try:
        count = 0
        for record in services.audit.events(Trail(args.trail), since=since):
            out.write(record.to_json() + "\n")
            count += 1
    finally:
        if args.output:
            out.close()
    if args.output:
        print(f"wrote {count} {args.trail} events to {args.output}", file=sys.stderr)
    return 0


def cmd_audit_tail(args: argparse.Namespace) -> int:
    import time

    from gateway.domain.audit.trail import Trail

    if args.lines < 0:
        raise PamgateError("-n/--lines cannot be negative")
    services = _services(args)
    trail = Trail(args.trail)
    last = 0
    for record in services.audit.tail(trail, max(args.lines, 0)):
        print(_format_record(record), flush=True)
        last = record.seq
    if not last:
        last = services.audit.head(trail)[0]
    while args.follow:
        time.sleep(0.5)
        for record in services.audit.events(trail, after_seq=last):
            print(_format_record(record), flush=True)
            last = record.seq
    return 0


def cmd_audit_files(args: argparse.Namespace) -> int:
    import json

    from gateway.domain.transfer.report import file_records

    services = _services(args)
    since = parse_since(args.since) if args.since else None
    until = parse_since(args.until, "--until") if args.until else None
    count = 0
    for found in file_records(services.audit, user=args.user, target=args.target, since=since,
                              until=until, include_opened=args.opened):  # fmt: skip
        row = found.row()
        count += 1
        if args.json:
            print(json.dumps(row, ensure_ascii=False), flush=True)
            continue
        size = "-" if row["bytes"] is None else str(row["bytes"])
        whole = {True: "complete", False: "partial"}.get(row["complete"], "-")
        path = row["path"] or ""
        if row["new_path"]:
            path += f" -> {row['new_path']}"
        facts = [row["time"][:19].replace("T", " "), row["user"], str(row["target"]),
                 row["action"].removeprefix("file."), row["outcome"], str(row["direction"] or "-"),
                 size, row["sha256"] or "-", whole,
                 str(row["tool"] or "-"), str(row["authority"] or "-"), one_line(path)]  # fmt: skip
        if row["reason"]:
            facts.append(f"({one_line(row['reason'])})")
        print("  ".join(facts), flush=True)
    if not args.json:
        print(f"{count} file events", file=sys.stderr)
    return 0


def cmd_audit_checkpoint(args: argparse.Namespace) -> int:
    services = _services(args)
    for checkpoint in services.checkpoints.checkpoint():
        print(f"{checkpoint.trail}: event {checkpoint.seq} hash {checkpoint.hash[:16]} signed")
    print(f"appended to {services.checkpoints.path}; copy it somewhere safe")
    return 0


def cmd_recordings_list(args: argparse.Namespace) -> int:
    services = _services(args)
    since = parse_since(args.since) if args.since else None
    found = services.recordings.list(user=args.user, target=args.target, since=since)
    if not found:
        print("no recorded sessions match")
        return 0
    columns = ("SESSION", 12), ("STARTED (UTC)", 19), ("USER", 12), ("WHERE", 24), ("KIND", 6)
    print(" ".join(f"{name:<{width}}" for name, width in columns) + f" {'STATUS':<11} SEALED")
    for info in found:
        where = f"{info.account}@{info.target}"
        sealed = "yes" if info.sha256 else "no"
        flag = "  BREAK-GLASS" if info.break_glass else ""
        print(
            f"{info.session_id[:12]:<12} {info.started_at:%Y-%m-%d %H:%M:%S} {info.user:<12} "
            f"{where:<24} {info.kind:<6} {info.status:<11} {sealed}{flag}"
        )
    return 0


def cmd_recordings_search(args: argparse.Namespace) -> int:
    hits = _services(args).recordings.search(args.text)
    if not hits:
        print(f"no commands contain {args.text!r}")
        return 1
    for hit in hits:
        print(
            f"{hit.at:%Y-%m-%d %H:%M:%S}  {hit.session_id[:12]}  {hit.user}  {hit.where}  "
            f"+{_clock(hit.offset)}  {hit.text}"
        )
    return 0


def cmd_recordings_commands(args: argparse.Namespace) -> int:
    services = _services(args)
    info = services.recordings.info(args.session)
    commands = services.recordings.commands(info.session_id)
    if not commands:
        print(f"no commands extracted for session {info.session_id} ({info.kind})")
    for command in commands:
        print(f"+{_clock(command.offset)}  {command.text}")
    return 0


def cmd_recordings_export(args: argparse.Namespace) -> int:
    info = _services(args).recordings.export(args.session, args.output, actor=_actor())
    print(f"wrote session {info.session_id} to {args.output}")
    return 0


def cmd_recordings_verify(args: argparse.Namespace) -> int:
    services = _services(args)
    references = (
        [i.session_id for i in services.recordings.list(limit=10**9)]
        if args.all
        else [args.session]
    )
    failed = 0
    for reference in references:
        info, problem = services.recordings.verify(reference)
        if problem:
            failed += 1
            print(f"{info.session_id}: FAILED: {problem}")
        else:
            print(f"{info.session_id}: OK ({info.sha256[:16]})")  # type: ignore[index]
    if args.all:
        print(f"{len(references) - failed} of {len(references)} recordings verified")
    return 1 if failed else 0


def cmd_replay(args: argparse.Namespace) -> int:
    from recordings.player import PlainRecording, Player, play_in_terminal

    services = _services(args)
    if args.speed <= 0:
        raise PamgateError("--speed must be above 0 (e.g. 0.5 for half speed)")
    if args.idle_limit is not None and args.idle_limit < 0:
        raise PamgateError("--idle-limit cannot be negative")
    start = _parse_position(args.start)
    info = services.recordings.open_for_review(args.session, actor=_actor(), purpose="replayed")
    assert info.path is not None
    if info.sha256 is None:
        print(
            f"note: session {info.session_id} was never sealed ({info.status}); "
            "showing the recording as written",
            file=sys.stderr,
        )
    command_times = [c.offset for c in services.recordings.commands(info.session_id)]
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
            player.play(start)
    finally:
        recording.close()
    return 0


def cmd_request_list(args: argparse.Namespace) -> int:
    found = _services(args).requests.list(pending_only=not args.all)
    if not found:
        print("no pending requests" if not args.all else "no requests")
        return 0
    for request in found:
        approvals = f"{len(request.approvals)}/{request.approvals_required}"
        print(
            f"#{request.id:<5} {request.status:<9} {request.user:<12} "
            f"{request.account}@{request.target:<16} for {request.duration_seconds // 60}m "
            f"approvals {approvals:<5} "
            f"by {','.join(request.approver_groups):<10} {request.created_at:%Y-%m-%d %H:%M} "
            f"{request.reason!r}"
        )
    return 0


def _pending_request(services, request_id: int):  # noqa: ANN001, ANN202
    """The request, checked before an approver spends a one-time code on it."""
    request = services.requests.get(request_id)
    if request.status != "pending":
        raise PamgateError(f"request #{request_id} is {request.status}, not pending")
    return request


def cmd_request_approve(args: argparse.Namespace) -> int:
    services = _services(args)
    _pending_request(services, args.request_id)
    approver = _authenticate_person(services, args, "request approve")
    request = services.requests.approve(args.request_id, approver, args.comment)
    if request.status == "approved":
        print(f"request #{request.id} approved: grant #{request.grant_id} for {request.user}")
    else:
        print(
            f"request #{request.id}: {len(request.approvals)} of "
            f"{request.approvals_required} approvals"
        )
    return 0


def cmd_request_deny(args: argparse.Namespace) -> int:
    services = _services(args)
    if not args.comment.strip():
        raise PamgateError("a denial needs --comment for the requester")
    _pending_request(services, args.request_id)
    approver = _authenticate_person(services, args, "request deny")
    request = services.requests.deny(args.request_id, approver, args.comment)
    print(f"request #{request.id} denied")
    return 0


def cmd_breakglass_list(args: argparse.Namespace) -> int:
    from datetime import UTC, datetime

    cases = _services(args).breakglass.list(unreviewed=args.unreviewed, overdue=args.overdue)
    if not cases:
        which = "overdue " if args.overdue else "unreviewed " if args.unreviewed else ""
        print(f"no {which}break-glass cases")
    now = datetime.now(UTC)
    for case in cases:
        state = (
            f"{case.verdict} by {case.reviewed_by}"
            if case.verdict
            else "OVERDUE"
            if case.overdue(now)
            else f"review by {case.review_due_at:%Y-%m-%d %H:%M}"
        )
        print(
            f"#{case.id:<4} {case.created_at:%Y-%m-%d %H:%M} {case.user:<12} "
            f"{case.account}@{case.target:<14} {state:<28} {case.justification!r}"
        )
    return 0


def cmd_breakglass_review(args: argparse.Namespace) -> int:
    services = _services(args)
    case = services.breakglass.get(args.case_id)
    if case.verdict is not None:
        raise PamgateError(f"case #{case.id} was reviewed already by {case.reviewed_by}")
    reviewer = _authenticate_person(services, args, "breakglass review")
    case = services.breakglass.review(args.case_id, reviewer, args.verdict, args.note)
    print(f"break-glass case #{case.id} reviewed: {case.verdict}")
    return 0


def cmd_grant_list(args: argparse.Namespace) -> int:
    grants = _services(args).requests.list_grants(active_only=args.active)
    if not grants:
        print("no grants")
    for grant in grants:
        state = "revoked" if grant.revoked else f"until {grant.ends_at:%Y-%m-%d %H:%M:%S}"
        print(
            f"#{grant.id:<5} {grant.user:<12} {grant.account}@{grant.target:<16} {state}"
            f"  ({f'request #{grant.request_id}' if grant.request_id else grant.authority})"
        )
    return 0


def cmd_grant_revoke(args: argparse.Namespace) -> int:
    grant = _services(args).requests.revoke(args.grant_id, _actor(), args.reason)
    print(f"grant #{grant.id} revoked; its sessions close within about 2 seconds")
    return 0


def _authenticate_person(services, args: argparse.Namespace, purpose: str) -> str:  # noqa: ANN001
    """Check the approver's password and TOTP code, as at login; return their name.

    Failures count towards the same lockout as SSH logins and are audited.
    """
    password = _read_password(args.password_stdin, confirm=False)
    code = args.totp
    if code is None:
        if not sys.stdin.isatty():
            raise PamgateError("no terminal to ask for the TOTP code: use --totp CODE")
        code = getpass.getpass("Verification code: ")
    user = services.sign_in.sign_in(
        args.approver, password, code, source=f"cli:{_actor()}", purpose=purpose
    )
    return user.name


def cmd_policy_check(args: argparse.Namespace) -> int:
    from datetime import UTC, datetime

    from gateway.domain.access import Allowed, NeedsApproval

    services = _services(args)
    target, _, account = args.destination.partition(":")
    when = datetime.now(UTC)
    if args.at:
        try:
            when = datetime.fromisoformat(args.at)
        except ValueError:
            raise PamgateError(f"--at {args.at!r}: give an ISO date/time") from None
        when = when if when.tzinfo else when.replace(tzinfo=UTC)
    if services.users.get(args.user) is None:
        raise PamgateError(f"no user named {args.user!r}")
    decision = services.access.decide(
        args.user, target, account or None, source=args.source, at=when
    )
    if isinstance(decision, NeedsApproval):
        rule = decision.rule
        print(
            f"approval: {decision.account}@{target} needs "
            f"{rule.approvals_required} approval(s) from {', '.join(rule.approver_groups)} "
            f"(rule {rule.id}; max {rule.max_duration}, default {rule.default_duration}"
            f"{', reason required' if rule.reason_required else ''}"
            f"{', break-glass allowed' if rule.break_glass else ''})"
        )
        return 0
    if not isinstance(decision, Allowed):
        print(f"deny: {decision.reason}")
        return 1
    print(f"allow: {decision.account}@{target} ({decision.authority})")
    return 0


def cmd_check_config(args: argparse.Namespace) -> int:
    config: GatewayConfig = args.loaded_config
    targets = f"{len(config.targets)} target{'s' if len(config.targets) != 1 else ''}"
    print(f"{config.source}: OK ({targets}, data dir {config.data_dir})")
    return 0


# -- helpers ------------------------------------------------------------------


def _services(args: argparse.Namespace):  # noqa: ANN202 - GatewayServices, imported lazily
    from gateway.datadir import check_ready
    from gateway.services import GatewayServices

    check_ready(args.loaded_config)
    services = GatewayServices.open(args.loaded_config)
    services.store.create_schema(f"pamgate --config {args.loaded_config.source} db upgrade")
    return services


def _format_record(record) -> str:  # noqa: ANN001 - gateway.domain.audit.trail.AuditRecord
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


def _clock(seconds: float) -> str:
    whole = int(seconds)
    return f"{whole // 3600:02d}:{whole % 3600 // 60:02d}:{whole % 60:02d}"


def _parse_position(text: str) -> float:
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


def _progress(label: str) -> Callable[[int], None] | None:
    """A progress printer for long work, when stderr is a terminal."""
    if not sys.stderr.isatty():
        return None
    return lambda count: print(
        f"\r{label} {count:,} events...", end="", file=sys.stderr, flush=True
    )


def _actor() -> str:
    """The administrator running this command, as recorded in the audit trail."""
    return f"{getpass.getuser()}@{socket.gethostname()}"


def _upstream_ca_line(config: GatewayConfig) -> str:
    from gateway.crypto.upstream_ca import load_private_key
    from gateway.datadir import DataDir

    key = load_private_key(DataDir(config.data_dir).upstream_ca_key, "upstream CA")
    return key.export_public_key().decode().strip()


def _read_key_file(path: Path) -> str:
    try:
        text = path.read_text().strip()
    except OSError as exc:
        raise PamgateError(f"cannot read SSH key file {path}: {exc.strerror}") from None
    if "PRIVATE KEY" in text:
        raise PamgateError(f"{path} is a private key: give the .pub file")
    return text


def _read_password(from_stdin: bool, *, confirm: bool) -> str:
    if from_stdin:
        line = sys.stdin.readline()
        password = line.rstrip("\r\n")
        if not password:
            raise PamgateError("no password on stdin")
        return password
    if not sys.stdin.isatty():
        raise PamgateError("no terminal to ask for a password: use --password-stdin")
    password = getpass.getpass("Password: ")
    if confirm and getpass.getpass("Password (again): ") != password:
        raise PamgateError("the passwords do not match")
    return password


def _take_config_option(argv: list[str]) -> tuple[str | None, list[str]]:
    """Pull ``--config PATH`` out of ``argv`` wherever it stands.

    So ``pamgate user list --config F`` works as well as ``pamgate --config F user list``.
    """
    config, rest = None, []
    words = iter(argv)
    for word in words:
        if word == "--":
            rest += [word, *words]
        elif word == "--config":
            config = next(words, None)
            if config is None:
                rest.append(word)  # let argparse report the missing value
        elif word.startswith("--config="):
            config = word.removeprefix("--config=")
        else:
            rest.append(word)
    return config, rest


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``pamgate`` command."""
    parser = build_parser()
    config_path, rest = _take_config_option(list(sys.argv[1:] if argv is None else argv))
    if "--config" in rest:
        parser.error("argument --config: expected a PATH")
    args = parser.parse_args(rest)
    args.config = config_path or args.config
    handler: Callable[[argparse.Namespace], int] = args.handler
    try:
        if getattr(args, "needs_config", True) and handler is not cmd_init:
            args.loaded_config = load_config(find_config_path(args.config))
        return handler(args)
    except ConfigError as exc:
        print(f"pamgate: error: {exc}", file=sys.stderr)
        return 2
    except PamgateError as exc:
        print(f"pamgate: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
