"""``pamgate policy check``: what the access policy decides for a user and a
target, and which rule decides it, without logging in."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from gateway.cli.common import open_operator
from gateway.config import parse_iso_time

if TYPE_CHECKING:
    from gateway.cli.common import Subcommands


def add_commands(commands: Subcommands) -> None:
    """``policy check USER TARGET[:ACCOUNT]``."""
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


def cmd_policy_check(args: argparse.Namespace) -> int:
    from datetime import UTC, datetime

    from gateway.domain.access import Allowed, NeedsApproval

    target, _, account = args.destination.partition(":")
    when = parse_iso_time(args.at, "--at") if args.at else datetime.now(UTC)
    with open_operator(args) as actions:
        decision = actions.policy_decision(
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
