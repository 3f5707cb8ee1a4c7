"""Commands users run on the gateway itself, over SSH, before they need access.

``ssh -p PORT alice@gw request web01 --account root --for 1h --reason "..."``
asks ahead of time; ``ssh -p PORT alice@gw requests`` lists her requests and
grants; ``ssh -p PORT alice:web01@gw breakglass --reason "..."`` invokes
break-glass for that target. They are recognised only when the login names
no target (``request``, ``requests``) or for the exact word ``breakglass``,
and they never reach a target.
"""

from __future__ import annotations

import argparse
import re
import shlex
from dataclasses import dataclass

from gateway.config import parse_duration
from gateway.domain.access import Allowed, Denied, NeedsApproval
from gateway.errors import PamgateError
from gateway.services import GatewayServices

WITHOUT_TARGET = ("request", "requests")
WITH_TARGET = ("breakglass",)


@dataclass(frozen=True)
class CommandResult:
    """What to print and the exit status."""

    output: str
    status: int = 0


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        raise PamgateError(f"{self.prog}: {message}")


def is_gateway_command(command: str | None, *, has_target: bool) -> bool:
    """True if an exec ``command`` is meant for the gateway, not the target."""
    if not command:
        return False
    first = command.split(maxsplit=1)[0]
    return first in (WITH_TARGET if has_target else WITHOUT_TARGET)


def run_gateway_command(
    services: GatewayServices,
    *,
    user: str,
    source: str,
    command: str,
    target: str | None,
    account: str | None,
) -> CommandResult:
    """Run a self-service command for an authenticated user.

    ``--reason`` takes the rest of the line: ssh joins its arguments with
    spaces and drops the local quotes, so ``--reason "a b c"`` arrives as
    three words.
    """
    head, reason = _split_reason(command)
    try:
        words = shlex.split(head)
    except ValueError as exc:
        raise PamgateError(f"cannot parse the command: {exc}") from None
    name, arguments = words[0], words[1:]
    if reason is not None:
        arguments += ["--reason", reason]
    if name == "requests":
        return _list(services, user)
    if name == "request":
        parser = _Parser(prog="request", add_help=False)
        parser.add_argument("target")
        parser.add_argument("--account")
        parser.add_argument("--for", dest="duration")
        parser.add_argument("--reason", default="")
        args = parser.parse_args(arguments)
        return _request(services, user, source, args)
    parser = _Parser(prog="breakglass", add_help=False)
    parser.add_argument("--reason", required=True)
    args = parser.parse_args(arguments)
    assert target is not None
    return _breakglass(services, user, source, target, account, args.reason)


def _split_reason(command: str) -> tuple[str, str | None]:
    """Split ``... --reason REST`` into the part before and REST (unquoted)."""
    match = re.search(r"(?:^|\s)--reason(?:=|\s+)", command)
    if match is None:
        return command, None
    reason = command[match.end() :].strip()
    if len(reason) >= 2 and reason[0] == reason[-1] and reason[0] in "'\"":
        reason = reason[1:-1]
    return command[: match.start()], reason


def _needs_approval(
    services: GatewayServices, user: str, source: str, target: str, account: str | None
) -> NeedsApproval | Allowed:
    """The access decision for the destination; a denial ends the command with its reason."""
    decision = services.access.decide(user, target, account, source=source)
    if isinstance(decision, Denied):
        raise decision.error()
    return decision


def _request(
    services: GatewayServices, user: str, source: str, args: argparse.Namespace
) -> CommandResult:
    needed = _needs_approval(services, user, source, args.target, args.account)
    if isinstance(needed, Allowed):
        return CommandResult(f"no request needed: you may reach {args.target} now\n")
    rule = needed.rule
    duration = parse_duration(args.duration, "--for") if args.duration else None
    request = services.requests.create(
        user=user, target=needed.target.name, account=needed.account,
        rule=rule, reason=args.reason, source=source, duration=duration,
    )  # fmt: skip
    capped = ""
    if duration is not None and duration > request.duration_seconds:
        capped = f" (asked for {args.duration}; rule {rule.id} allows at most {rule.max_duration})"
    return CommandResult(
        f"Request #{request.id} for {request.target} ({request.account}), "
        f"{_minutes(request.duration_seconds)}{capped}, is waiting for approval "
        f"by {', '.join(request.approver_groups)} ({request.approvals_required} needed).\n"
        "Once approved, connect as usual; `requests` shows where it stands.\n"
    )


def _minutes(seconds: int) -> str:
    return f"{seconds // 60} min" if seconds >= 60 else f"{seconds} s"


def _list(services: GatewayServices, user: str) -> CommandResult:
    lines = []
    for request in services.requests.list(user=user, limit=20):
        decided = f"  ({request.decided_by}: {request.comment})" if request.comment else ""
        lines.append(
            f"request #{request.id}  {request.status:<9} {request.account}@{request.target}  "
            f"{_minutes(request.duration_seconds)}  "
            f"{len(request.approvals)}/{request.approvals_required} approvals  "
            f"{request.reason}{decided}"
        )
    for grant in services.requests.list_grants(user=user, active_only=True):
        lines.append(
            f"{grant.authority}  {grant.account}@{grant.target} until "
            f"{grant.ends_at:%Y-%m-%d %H:%M:%S} UTC"
        )
    return CommandResult("\n".join(lines) + "\n" if lines else "no requests or grants\n")


def _breakglass(
    services: GatewayServices, user: str, source: str, target: str, account: str | None,
    reason: str,
) -> CommandResult:  # fmt: skip
    needed = _needs_approval(services, user, source, target, account)
    if isinstance(needed, Allowed):
        return CommandResult(f"no break-glass needed: you may reach {target} now\n")
    case, grant = services.breakglass.invoke(
        user=user, target=needed.target.name, account=needed.account,
        rule=needed.rule, justification=reason, source=source,
    )  # fmt: skip
    return CommandResult(
        f"BREAK-GLASS #{case.id}: access to {grant.account}@{grant.target} until "
        f"{grant.ends_at:%H:%M:%S} UTC. This has been announced, the session will be "
        "recorded and flagged, and someone else must review it.\n"
        "Connect as usual now.\n"
    )
