"""Access beyond the standing rules: ``pamgate request`` (approve or deny what
approval rules asked for), ``pamgate grant`` (the access that resulted) and
``pamgate breakglass`` (emergency access and its review). Deciding is done by a
pamgate user: the operator ``PAMGATE_OPERATOR`` names (their SSH login was their
second factor), else the one ``--as`` names, with their own password and TOTP
code."""

from __future__ import annotations

import argparse
import getpass
import sys
from typing import TYPE_CHECKING

from gateway.cli.common import (
    local_admin,
    open_operator,
    open_services,
    operator_actions,
    read_password,
)
from gateway.cli.render import add_json_option, print_json_line, print_table
from gateway.errors import PamgateError, UsageError

if TYPE_CHECKING:
    from datetime import datetime

    from gateway.cli.common import Subcommands
    from gateway.domain.approvals import GrantView, RequestView
    from gateway.domain.breakglass import CaseView
    from gateway.domain.operators import OperatorActions
    from gateway.services import GatewayServices


def add_commands(commands: Subcommands) -> None:
    """``request list|approve|deny``, ``breakglass list|review``, ``grant list|revoke``."""
    requests = commands.add_parser(
        "request",
        help="list, approve and deny access requests",
        description=(
            "Access requests come from logins under approval rules. A pamgate user decides: "
            "the operator PAMGATE_OPERATOR names, else the one --as USER names, with their "
            "own password and TOTP code. Nobody decides their own request."
        ),
    ).add_subparsers(dest="request_command", metavar="SUBCOMMAND", required=True)
    listing = requests.add_parser(
        "list", help="requests, newest first", description="List requests, newest first."
    )
    listing.add_argument(
        "--all", action="store_true", help="include decided ones (default: pending)"
    )
    add_json_option(listing)
    listing.set_defaults(handler=cmd_request_list)
    for name, handler in (("approve", cmd_request_approve), ("deny", cmd_request_deny)):
        sub = requests.add_parser(
            name, help=f"{name} a request as an approver",
            description=f"{name.capitalize()} request N, authenticated as the approver.",
        )  # fmt: skip
        sub.add_argument("request_id", type=int, metavar="N")
        sub.add_argument("--comment", default="", help="shown to the requester"
                         + (" (required)" if name == "deny" else ""))  # fmt: skip
        add_decider_options(sub)
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
    add_json_option(cases)
    cases.set_defaults(handler=cmd_breakglass_list)
    review = breakglass.add_parser(
        "review", help="record a verdict on a case",
        description="Record a verdict on break-glass case N, authenticated as the reviewer.",
    )  # fmt: skip
    review.add_argument("case_id", type=int, metavar="N")
    review.add_argument("--verdict", choices=["justified", "unjustified"], required=True)
    review.add_argument("--note", required=True, help="why (kept in the audit trail)")
    add_decider_options(review)
    review.set_defaults(handler=cmd_breakglass_review)

    grants = commands.add_parser("grant", help="list and revoke grants").add_subparsers(
        dest="grant_command", metavar="SUBCOMMAND", required=True
    )
    grant_list = grants.add_parser(
        "list", help="grants, newest first", description="List grants, newest first."
    )
    grant_list.add_argument("--active", action="store_true", help="only current ones")
    add_json_option(grant_list)
    grant_list.set_defaults(handler=cmd_grant_list)
    revoke = grants.add_parser(
        "revoke", help="end a grant now (its sessions close within 2 s)",
        description="Revoke grant N: live sessions under it are closed within about 2 seconds.",
    )  # fmt: skip
    revoke.add_argument("grant_id", type=int, metavar="N")
    revoke.add_argument("--reason", required=True)
    revoke.set_defaults(handler=cmd_grant_revoke)


def add_decider_options(parser: argparse.ArgumentParser) -> None:
    # Not required by argparse: for an operator PAMGATE_OPERATOR names, it is refused.
    parser.add_argument(
        "--as",
        dest="approver",
        metavar="USER",
        help="who decides: a pamgate user, authenticated with their password and TOTP code "
        "(required, except for the operator PAMGATE_OPERATOR names)",
    )
    parser.add_argument(
        "--password-stdin", action="store_true", help="read the approver's password from stdin"
    )
    parser.add_argument("--totp", metavar="CODE", help="the approver's current TOTP code")


def cmd_request_list(args: argparse.Namespace) -> int:
    with open_operator(args) as actions:
        found = actions.requests(pending_only=not args.all)
    if args.json:
        for request in found:
            print_json_line(_request_record(request))
        return 0
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


def _request_record(request: RequestView) -> dict[str, object]:
    """One row of ``request list --json``."""
    return {
        "id": request.id, "status": request.status, "user": request.user,
        "target": request.target, "account": request.account,
        "duration_seconds": request.duration_seconds, "approvals": list(request.approvals),
        "approvals_required": request.approvals_required,
        "approver_groups": list(request.approver_groups), "rule": request.rule_id,
        "created_at": request.created_at, "expires_at": request.expires_at,
        "reason": request.reason, "decided_at": request.decided_at,
        "decided_by": request.decided_by, "comment": request.comment, "grant": request.grant_id,
    }  # fmt: skip


def _check_pending(args: argparse.Namespace, actions: OperatorActions, request_id: int) -> None:
    """Check the request is pending before an approver signing in with --as spends a one-time
    code on it (the operator PAMGATE_OPERATOR names spends none: the decision checks)."""
    if getattr(args, "delegated_operator", None) is not None:
        return
    request = actions.request(request_id)
    if request.status != "pending":
        raise PamgateError(f"request #{request_id} is {request.status}, not pending")


def cmd_request_approve(args: argparse.Namespace) -> int:
    check_decider_options(args, "request approve")
    with open_services(args) as services:
        actions = operator_actions(services, args)
        _check_pending(args, actions, args.request_id)
        decider = signed_in_decider(services, actions, args, "request approve")
        request = decider.approve(args.request_id, args.comment)
    if request.status == "approved":
        print(f"request #{request.id} approved: grant #{request.grant_id} for {request.user}")
    else:
        print(
            f"request #{request.id}: {len(request.approvals)} of "
            f"{request.approvals_required} approvals"
        )
    return 0


def cmd_request_deny(args: argparse.Namespace) -> int:
    check_decider_options(args, "request deny")
    with open_services(args) as services:
        if not args.comment.strip():
            raise PamgateError("a denial needs --comment for the requester")
        actions = operator_actions(services, args)
        _check_pending(args, actions, args.request_id)
        decider = signed_in_decider(services, actions, args, "request deny")
        request = decider.deny(args.request_id, args.comment)
    print(f"request #{request.id} denied")
    return 0


def cmd_breakglass_list(args: argparse.Namespace) -> int:
    from datetime import UTC, datetime

    with open_operator(args) as actions:
        cases = actions.breakglass_cases(unreviewed=args.unreviewed, overdue=args.overdue)
    now = datetime.now(UTC)
    if args.json:
        for case in cases:
            print_json_line(_case_record(case, now))
        return 0
    if not cases:
        which = "overdue " if args.overdue else "unreviewed " if args.unreviewed else ""
        print(f"no {which}break-glass cases")
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


def _case_record(case: CaseView, now: datetime) -> dict[str, object]:
    """One row of ``breakglass list --json``."""
    return {
        "id": case.id, "created_at": case.created_at, "user": case.user,
        "target": case.target, "account": case.account, "justification": case.justification,
        "grant": case.grant_id, "review_due_at": case.review_due_at,
        "overdue": case.overdue(now), "verdict": case.verdict,
        "reviewed_by": case.reviewed_by, "note": case.note or None,
    }  # fmt: skip


def cmd_breakglass_review(args: argparse.Namespace) -> int:
    check_decider_options(args, "breakglass review")
    with open_services(args) as services:
        actions = operator_actions(services, args)
        if getattr(args, "delegated_operator", None) is None:
            # Before the reviewer signing in with --as spends a one-time code on it.
            case = actions.breakglass_case(args.case_id)
            if case.verdict is not None:
                raise PamgateError(f"case #{case.id} was reviewed already by {case.reviewed_by}")
        reviewer = signed_in_decider(services, actions, args, "breakglass review")
        case = reviewer.review_breakglass(args.case_id, args.verdict, args.note)
    print(f"break-glass case #{case.id} reviewed: {case.verdict}")
    return 0


def cmd_grant_list(args: argparse.Namespace) -> int:
    with open_operator(args) as actions:
        grants = actions.grants(active_only=args.active)
    if args.json:
        for grant in grants:
            print_json_line(_grant_record(grant))
        return 0
    if not grants:
        print("no grants")
    print_table(
        (f"#{grant.id}", grant.user, f"{grant.account}@{grant.target}",
         "revoked" if grant.revoked else f"until {grant.ends_at:%Y-%m-%d %H:%M:%S}",
         f"({f'request #{grant.request_id}' if grant.request_id else grant.authority})")
        for grant in grants
    )  # fmt: skip
    return 0


def _grant_record(grant: GrantView) -> dict[str, object]:
    """One row of ``grant list --json``."""
    return {
        "id": grant.id, "user": grant.user, "target": grant.target, "account": grant.account,
        "starts_at": grant.starts_at, "ends_at": grant.ends_at, "revoked": grant.revoked,
        "revoke_reason": grant.revoke_reason or None, "request": grant.request_id,
        "authority": grant.authority,
    }  # fmt: skip


def cmd_grant_revoke(args: argparse.Namespace) -> int:
    with open_operator(args) as actions:
        grant = actions.revoke_grant(args.grant_id, args.reason)
    print(f"grant #{grant.id} revoked; its sessions close within about 2 seconds")
    return 0


def check_decider_options(args: argparse.Namespace, command: str) -> None:
    """Who decides must be said once: by PAMGATE_OPERATOR, or by --as (UsageError)."""
    if getattr(args, "delegated_operator", None) is not None:
        options = (("--as", args.approver), ("--password-stdin", args.password_stdin),
                   ("--totp", args.totp))  # fmt: skip
        given = [option for option, value in options if value]
        if given:
            raise UsageError(
                f"{command}: {', '.join(given)} cannot be used here: you decide as yourself, "
                "and your login to the gateway was your second factor"
            )
    elif args.approver is None:
        raise UsageError(
            f"{command} needs --as USER: the pamgate user who decides, signed in with their "
            "password and TOTP code"
        )


def signed_in_decider(
    services: GatewayServices, actions: OperatorActions, args: argparse.Namespace, purpose: str
) -> OperatorActions:
    """Who decides: the operator PAMGATE_OPERATOR names (``actions``), else the pamgate
    user --as names, once their password and TOTP code check out as at login (failures
    count towards the same lockout as SSH logins and are audited)."""
    if getattr(args, "delegated_operator", None) is not None:
        return actions
    password = read_password(args.password_stdin, confirm=False)
    code = args.totp
    if code is None:
        if not sys.stdin.isatty():
            raise PamgateError("no terminal to ask for the TOTP code: use --totp CODE")
        code = getpass.getpass("Verification code: ")
    host = local_admin()
    user = services.sign_in.sign_in(
        args.approver, password, code, source=f"cli:{host.os_user}@{host.host}", purpose=purpose
    )
    return services.operator_actions(user.name)
