"""``pamgate user``: the people who log in through the human lane, their
factors (password, SSH keys, TOTP), groups and sign-in back-offs."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from gateway.cli.common import (
    STDIO,
    is_stdio,
    open_operator,
    read_key_file,
    read_password,
    refuse_host_path,
)
from gateway.cli.render import add_json_option, print_json_line, print_table
from gateway.config import GatewayConfig
from gateway.errors import PamgateError

if TYPE_CHECKING:
    from gateway.cli.common import Subcommands
    from gateway.domain.identities import UserView


def add_commands(commands: Subcommands) -> None:
    """``user add|list|disable|enable|reset-mfa|unlock|logout|login-certs|set-groups|passwd|
    add-key``."""
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
        help=f"register the public key in FILE (repeatable; {STDIO}: stdin)",
    )
    add.add_argument("--no-password", action="store_true", help="key-only user: needs --ssh-key")
    add.set_defaults(handler=cmd_user_add)

    listing = user.add_parser("list", help="list users", description="List users, by name.")
    add_json_option(listing)
    listing.set_defaults(handler=cmd_user_list)
    for name, help_text, handler in (
        ("disable", "disable a user (they can no longer log in)", cmd_user_disable),
        ("enable", "enable a disabled user", cmd_user_enable),
        ("reset-mfa", "give a user a new TOTP secret", cmd_user_reset_mfa),
        ("unlock", "clear a user's failed sign-ins at every address", cmd_user_unlock),
        ("logout", "revoke a user's login certificates (pamgate-login); their sessions "
         "signed in with one end within 2 s", cmd_user_logout),
    ):
        sub = user.add_parser(
            name, help=help_text, description=help_text[0].upper() + help_text[1:] + "."
        )
        sub.add_argument("name")
        if name in ("disable", "enable"):
            sub.add_argument(
                "--reason", default="", help="why, for the audit trail (quote it if it has spaces)"
            )
        sub.set_defaults(handler=handler)
    certificates = user.add_parser(
        "login-certs",
        help="login certificates in use (neither expired nor revoked)",
        description=(
            "List the login certificates (from 'ssh USER@gw pamgate-login') that are neither "
            "expired nor revoked: user, serial, key fingerprint, issued, valid until, and the "
            "address a certificate is bound to."
        ),
    )
    certificates.add_argument("name", nargs="?", help="only this user's")
    add_json_option(certificates)
    certificates.set_defaults(handler=cmd_user_login_certs)
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
        help="set a user's password (revokes their login certificates)",
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
    add_key.add_argument("key_file", type=Path, metavar="FILE", help=f"{STDIO}: stdin")
    add_key.set_defaults(handler=cmd_user_add_key)


def cmd_user_add(args: argparse.Namespace) -> int:
    from gateway.domain.enrolment import describe_enrolment

    for path in args.ssh_key:
        refuse_host_path(args, path, "--ssh-key")
    from_stdin = [path for path in args.ssh_key if is_stdio(path)]
    if len(from_stdin) + bool(args.password_stdin and not args.no_password) > 1:
        raise PamgateError("only one of --password-stdin and --ssh-key - can read stdin")
    keys = [read_key_file(path) for path in args.ssh_key]
    if args.no_password:
        if not keys:
            raise PamgateError("--no-password needs at least one --ssh-key")
        password = None
    else:
        password = read_password(args.password_stdin, confirm=True)
    with open_operator(args) as actions:
        enrolment = actions.add_user(
            args.name, groups=args.group, password=password, public_keys=keys
        )
    print(f"created user {args.name} (groups: {', '.join(args.group) or 'none'})")
    config: GatewayConfig = args.loaded_config
    used = {group for rule in config.rules for group in rule.groups}
    for group in sorted(set(args.group) - used):
        print(f"warning: no access rule mentions group {group!r} yet", file=sys.stderr)
    print(describe_enrolment(enrolment, sys.stdout))
    return 0


def cmd_user_list(args: argparse.Namespace) -> int:
    with open_operator(args) as actions:
        users = actions.users()
    if args.json:
        for user in users:
            print_json_line(_user_record(user))
        return 0
    if not users:
        print("no users (add one with 'pamgate user add NAME')")
        return 0
    rows = []
    for user in users:
        status = "disabled" if user.disabled else "enabled"
        rows.append((user.name, status, "+".join(_factors(user)), ", ".join(user.groups)))
    print_table(rows, header=("NAME", "STATUS", "FACTORS", "GROUPS"))
    return 0


def _factors(user: UserView) -> list[str]:
    """The user's factors, first factors first: password, key, then totp (always)."""
    first = [f for f, present in (("password", user.has_password),
                                  ("key", bool(user.key_fingerprints))) if present]  # fmt: skip
    return [*first, "totp"]


def _user_record(user: UserView) -> dict[str, object]:
    """One row of ``user list --json``."""
    return {
        "name": user.name, "status": "disabled" if user.disabled else "enabled",
        "factors": _factors(user), "groups": list(user.groups),
        "key_fingerprints": list(user.key_fingerprints), "created_at": user.created_at,
    }  # fmt: skip


def cmd_user_disable(args: argparse.Namespace) -> int:
    with open_operator(args) as actions:
        actions.set_user_disabled(args.name, True, reason=args.reason)
    print(f"disabled {args.name}")
    return 0


def cmd_user_enable(args: argparse.Namespace) -> int:
    with open_operator(args) as actions:
        actions.set_user_disabled(args.name, False, reason=args.reason)
    print(f"enabled {args.name}")
    return 0


def cmd_user_reset_mfa(args: argparse.Namespace) -> int:
    from gateway.domain.enrolment import describe_enrolment

    with open_operator(args) as actions:
        enrolment = actions.reset_mfa(args.name)
    print(f"reset TOTP for {args.name}; the old secret no longer works")
    print(describe_enrolment(enrolment, sys.stdout))
    return 0


def cmd_user_unlock(args: argparse.Namespace) -> int:
    with open_operator(args) as actions:
        cleared = actions.unlock_user(args.name)
    print(f"cleared the failed sign-ins of {args.name} (back-off lifted at {cleared} addresses)")
    return 0


def cmd_user_logout(args: argparse.Namespace) -> int:
    with open_operator(args) as actions:
        serials = actions.log_out_user(args.name)
    listed = f" (serials {', '.join(str(s) for s in serials)})" if serials else ""
    print(f"logged {args.name} out: {len(serials)} login certificate(s) revoked{listed}")
    return 0


def cmd_user_login_certs(args: argparse.Namespace) -> int:
    with open_operator(args) as actions:
        certificates = actions.login_certificates(args.name)
    if args.json:
        for cert in certificates:
            print_json_line({
                "user": cert.user, "serial": cert.serial, "key": cert.key_fingerprint,
                "issued_at": cert.issued_at, "valid_before": cert.valid_before,
                "source_address": cert.source_address,
            })  # fmt: skip
        return 0
    if not certificates:
        print("no login certificates in use")
        return 0
    rows = [
        (cert.user, str(cert.serial), cert.key_fingerprint,
         f"{cert.issued_at:%Y-%m-%d %H:%M:%S}", f"{cert.valid_before:%Y-%m-%d %H:%M:%S}",
         cert.source_address or "-")
        for cert in certificates
    ]  # fmt: skip
    print_table(rows, header=("USER", "SERIAL", "KEY", "ISSUED", "VALID UNTIL", "BOUND TO"))
    return 0


def cmd_user_set_groups(args: argparse.Namespace) -> int:
    with open_operator(args) as actions:
        actions.set_user_groups(args.name, args.group)
    print(f"groups of {args.name}: {', '.join(sorted(set(args.group))) or 'none'}")
    return 0


def cmd_user_passwd(args: argparse.Namespace) -> int:
    with open_operator(args) as actions:
        # Before the password is typed: nobody types one for a user who is not there.
        if not actions.user_exists(args.name):
            raise PamgateError(f"no user named {args.name!r}")
        password = read_password(args.password_stdin, confirm=True)
        actions.set_password(args.name, password)
    print(f"password changed for {args.name}")
    return 0


def cmd_user_add_key(args: argparse.Namespace) -> int:
    refuse_host_path(args, args.key_file, "FILE")
    with open_operator(args) as actions:
        fingerprint = actions.add_user_key(args.name, read_key_file(args.key_file))
    print(f"registered key {fingerprint} for {args.name}")
    return 0
