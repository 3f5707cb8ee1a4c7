"""The top-level ``pamgate`` parser and :func:`main`: ``--config`` anywhere on
the line, loading the config, and turning errors into exit statuses."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from gateway.cli import (
    access,
    audit,
    ca,
    entitlements,
    machines,
    policy,
    recordings,
    server,
    users,
)
from gateway.cli.common import (
    OPERATOR_COMMANDS,
    OPERATOR_ENV_VAR,
    DelegatedOperator,
    delegated_operator,
)
from gateway.config import CONFIG_ENV_VAR, find_config_path, load_config
from gateway.errors import ConfigError, PamgateError, UsageError

if TYPE_CHECKING:
    from gateway.cli.common import Subcommands

#: Each group adds its commands in turn; this order is the order of ``pamgate --help``.
COMMAND_GROUPS: tuple[Callable[[Subcommands], None], ...] = (
    server.add_commands,  # init, serve, demo, console, db, status
    users.add_commands,
    ca.add_commands,
    audit.add_commands,
    recordings.add_commands,  # recordings, replay
    access.add_commands,  # request, breakglass, grant
    machines.add_commands,
    policy.add_commands,
    entitlements.add_commands,  # access (report, stale, suggest), review
    server.add_check_config_command,
)


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
    for add_commands in COMMAND_GROUPS:
        add_commands(commands)
    return parser


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
    """Entry point of the ``pamgate`` command.

    Exit status: the command's own, 1 for a PamgateError (a refusal included),
    2 for usage and configuration errors (a command that is not for an operator
    named by ``PAMGATE_OPERATOR`` included), 130 for Ctrl-C.
    """
    parser = build_parser()
    config_path, rest = _take_config_option(list(sys.argv[1:] if argv is None else argv))
    if "--config" in rest:
        parser.error("argument --config: expected a PATH")
    args = parser.parse_args(rest)
    args.config = config_path or args.config
    handler: Callable[[argparse.Namespace], int] = args.handler
    try:
        args.delegated_operator = _operator_mode(args)
        if getattr(args, "needs_config", True):
            args.loaded_config = load_config(find_config_path(args.config))
        return handler(args)
    except (ConfigError, UsageError) as exc:
        print(f"pamgate: error: {exc}", file=sys.stderr)
        return 2
    except PamgateError as exc:
        print(f"pamgate: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


def _operator_mode(args: argparse.Namespace) -> DelegatedOperator | None:
    """The operator ``PAMGATE_OPERATOR`` names, after checking the command is one for them
    (UsageError if not); ``--config`` then gives way to ``PAMGATE_CONFIG``."""
    delegated = delegated_operator()
    if delegated is None:
        return None
    if args.command not in OPERATOR_COMMANDS:
        raise UsageError(
            f"'pamgate {args.command}' works on the gateway host itself, not on access "
            f"state: it is not for operators ({OPERATOR_ENV_VAR}={delegated.name})"
        )
    if args.config is not None:
        print(
            f"pamgate: note: --config is ignored for {OPERATOR_ENV_VAR}={delegated.name}: "
            f"this gateway's configuration (${CONFIG_ENV_VAR}) is used",
            file=sys.stderr,
        )
        args.config = None
    return delegated
