"""Access beyond the standing rules: ``pamgate request`` (approve or deny what
approval rules asked for), ``pamgate grant`` (the access that resulted) and
``pamgate breakglass`` (emergency access and its review). Deciding needs the
decider's own password and TOTP code."""

from __future__ import annotations

import argparse
import getpass
import sys
from typing import TYPE_CHECKING

from gateway.cli.common import actor, open_services, read_password
from gateway.cli.render import print_table
from gateway.errors import PamgateError

if TYPE_CHECKING:
    from gateway.cli.common import Subcommands
    from gateway.domain.approvals import RequestView
    from gateway.services import GatewayServices


def add_commands(commands: Subcommands) -> None:
    """``request list|approve|deny``, ``breakglass list|review``, ``grant list|revoke``."""
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


def cmd_request_list(args: argparse.Namespace) -> int:
    with open_services(args) as services:
        found = services.requests.list(pending_only=not args.all)
    if not found:
        print("no pending requests" if not args.all else "no requests")
        return 0
    print_table(
        (f"#{request.id}", request.status, request.user, f"{request.account}@{request.target}",
         f"for {request.duration_seconds // 60}m",
         f"approvals {len(request.approvals)}/{request.approvals_required}",
         f"by {','.join(request.approver_groups)}", f"{request.created_at:%Y-%m-%d %H:%M}",
         repr(request.reason))
        for request in found
    )  # fmt: skip
    return 0


def _pending_request(services: GatewayServices, request_id: int) -> RequestView:
    """The request, checked before an approver spends a one-time code on it."""
    request = services.requests.get(request_id)
    if request.status != "pending":
        raise PamgateError(f"request #{request_id} is {request.status}, not pending")
    return request


def cmd_request_approve(args: argparse.Namespace) -> int:
    with open_services(args) as services:
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
    with open_services(args) as services:
        if not args.comment.strip():
            raise PamgateError("a denial needs --comment for the requester")
        _pending_request(services, args.request_id)
        approver = _authenticate_person(services, args, "request deny")
        request = services.requests.deny(args.request_id, approver, args.comment)
    print(f"request #{request.id} denied")
    return 0


def cmd_breakglass_list(args: argparse.Namespace) -> int:
    from datetime import UTC, datetime

    with open_services(args) as services:
        cases = services.breakglass.list(unreviewed=args.unreviewed, overdue=args.overdue)
    if not cases:
        which = "overdue " if args.overdue else "unreviewed " if args.unreviewed else ""
        print(f"no {which}break-glass cases")
    now = datetime.now(UTC)
    rows = []
    for case in cases:
        state = (
            f"{case.verdict} by {case.reviewed_by}"
            if case.verdict
            else "OVERDUE"
            if case.overdue(now)
            else f"review by {case.review_due_at:%Y-%m-%d %H:%M}"
        )
        rows.append((f"#{case.id}", f"{case.created_at:%Y-%m-%d %H:%M}", case.user,
                     f"{case.account}@{case.target}", state, repr(case.justification)))  # fmt: skip
    print_table(rows)
    return 0


def cmd_breakglass_review(args: argparse.Namespace) -> int:
    with open_services(args) as services:
        case = services.breakglass.get(args.case_id)
        if case.verdict is not None:
            raise PamgateError(f"case #{case.id} was reviewed already by {case.reviewed_by}")
        reviewer = _authenticate_person(services, args, "breakglass review")
        case = services.breakglass.review(args.case_id, reviewer, args.verdict, args.note)
    print(f"break-glass case #{case.id} reviewed: {case.verdict}")
    return 0


def cmd_grant_list(args: argparse.Namespace) -> int:
    with open_services(args) as services:
        grants = services.requests.list_grants(active_only=args.active)
    if not grants:
        print("no grants")
    print_table(
        (f"#{grant.id}", grant.user, f"{grant.account}@{grant.target}",
         "revoked" if grant.revoked else f"until {grant.ends_at:%Y-%m-%d %H:%M:%S}",
         f"({f'request #{grant.request_id}' if grant.request_id else grant.authority})")
        for grant in grants
    )  # fmt: skip
    return 0


def cmd_grant_revoke(args: argparse.Namespace) -> int:
    with open_services(args) as services:
        grant = services.requests.revoke(args.grant_id, actor(), args.reason)
    print(f"grant #{grant.id} revoked; its sessions close within about 2 seconds")
    return 0


def _authenticate_person(services: GatewayServices, args: argparse.Namespace, purpose: str) -> str:
    """Check the approver's password and TOTP code, as at login; return their name.

    Failures count towards the same lockout as SSH logins and are audited.
    """
    password = read_password(args.password_stdin, confirm=False)
    code = args.totp
    if code is None:
        if not sys.stdin.isatty():
            raise PamgateError("no terminal to ask for the TOTP code: use --totp CODE")
        code = getpass.getpass("Verification code: ")
    user = services.sign_in.sign_in(
        args.approver, password, code, source=f"cli:{actor()}", purpose=purpose
    )
    return user.name
