"""Entitlement review: ``pamgate access report|stale|suggest`` (who can reach what, what is
stale or too broad) and ``pamgate review start|list|show|decide|report|escalate`` (campaigns
that put every identity's access before its owners, and act on their decisions).

Reading needs the auditor or admin role; starting a campaign, admin. A decision is a
pamgate user's: the operator PAMGATE_OPERATOR names (their SSH login was their second
factor), else the one ``--as`` names, with their own password and TOTP code."""

from __future__ import annotations

import argparse
import csv
import json
import sys
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from gateway.cli.access import add_decider_options, check_decider_options, signed_in_decider
from gateway.cli.common import open_operator, open_services, operator_actions
from gateway.cli.render import add_json_option, json_time, print_json_line, print_table
from gateway.config import parse_iso_time
from gateway.errors import PamgateError

if TYPE_CHECKING:
    from gateway.cli.common import Subcommands
    from gateway.domain.entitlements.campaigns import CampaignView, ItemView
    from gateway.domain.entitlements.effective import AccessPath

DEFAULT_DAYS = 30


def add_commands(commands: Subcommands) -> None:
    """``access report|stale|suggest`` and ``review start|list|show|decide|report|escalate``."""
    access = commands.add_parser(
        "access",
        help="who can reach what, and what is stale or too broad",
        description=(
            "The entitlement report: every target account each human and NHI can reach now, "
            "through what, and when each path was last used (from the session records)."
        ),
    ).add_subparsers(dest="access_command", metavar="SUBCOMMAND", required=True)
    report = access.add_parser(
        "report",
        help="every identity's reachable target accounts, and through what",
        description=(
            "For each human: each target account the access decision opens to them now, from "
            "anywhere or from the networks rules name (allow rule, approval rule with its "
            "approvers and break-glass, or a current grant). For each NHI: its scope "
            "(commands, sources, max TTL). With the last use and session count of each."
        ),
    )
    report.add_argument("--identity", metavar="NAME", help="only this human or NHI")
    report.add_argument("--target", metavar="T", help="only paths to this target")
    output = report.add_mutually_exclusive_group()
    output.add_argument("--json", action="store_true", help="print one JSON object per line")
    output.add_argument("--csv", action="store_true", help="print CSV with a header row")
    report.set_defaults(handler=cmd_access_report)
    stale = access.add_parser(
        "stale",
        help="stale identities, keys, tokens and certificates; unused scope and rules",
        description=(
            "Humans, NHIs and registered keys unused for DAYS days, join tokens and "
            "certificates left outstanding, NHI scope never exercised (excessive: targets, "
            "commands, sources, pty, SFTP, each with a narrower scope suggested) and rules "
            "never matched. Exit 0 with nothing found, 3 with findings (for scripts)."
        ),
    )
    stale.add_argument(
        "--days", type=int, metavar="N",
        help="unused this many days is stale (default: [reviews] stale_after_days)",
    )  # fmt: skip
    add_json_option(stale)
    stale.set_defaults(handler=cmd_access_stale)
    suggest = access.add_parser(
        "suggest",
        help="a narrower scope for an NHI (or groups for a person), from observed use",
        description=(
            "What NAME would hold if it kept only what it used in the last DAYS days: for an "
            "NHI its targets, exact commands, source addresses, pty and SFTP; for a person "
            "their groups without those whose rules they did not use. Changes nothing: a "
            "review decision 'narrow' applies it."
        ),
    )
    suggest.add_argument("name", metavar="NAME")
    suggest.add_argument("--days", type=int, default=DEFAULT_DAYS, metavar="N")
    add_json_option(suggest, document=True)
    suggest.set_defaults(handler=cmd_access_suggest)

    review = commands.add_parser(
        "review",
        help="entitlement review campaigns",
        description=(
            "A campaign opens one item per identity for its reviewers (an NHI's owners, a "
            "person's manager group, [reviews] reviewer_groups). They decide keep, narrow "
            "(apply the suggested scope), suspend or offboard, with a note, signed in with MFA "
            "and never about themselves. Items left past the due date are escalated by "
            "webhook and, with [reviews] suspend_overdue, the identity is suspended."
        ),
    ).add_subparsers(dest="review_command", metavar="SUBCOMMAND", required=True)
    start = review.add_parser("start", help="open a campaign (admin)",
                              description="Open a review campaign. Admin.")  # fmt: skip
    start.add_argument("--of", dest="scope", choices=["machines", "humans", "all"], required=True)
    start.add_argument("--due", required=True, metavar="DATE",
                       help="ISO date or time (UTC) by which items must be decided")  # fmt: skip
    start.add_argument(
        "--days", type=int, metavar="N",
        help="usage window of the evidence (default: [reviews] stale_after_days)",
    )  # fmt: skip
    start.set_defaults(handler=cmd_review_start)
    listing = review.add_parser(
        "list", help="campaigns, or the items of one",
        description="Without CAMPAIGN: every campaign. With it: its items.",
    )  # fmt: skip
    listing.add_argument("campaign", type=int, nargs="?", metavar="CAMPAIGN")
    listing.add_argument("--pending", action="store_true", help="only items not decided yet")
    add_json_option(listing)
    listing.set_defaults(handler=cmd_review_list)
    show = review.add_parser(
        "show", help="one item and its evidence",
        description="An item, with the evidence its reviewer decides on.",
    )  # fmt: skip
    show.add_argument("item", type=int, metavar="ITEM")
    add_json_option(show, document=True)
    show.set_defaults(handler=cmd_review_show)
    decide = review.add_parser(
        "decide", help="decide an item as one of its reviewers",
        description=(
            "Decide review item ITEM: keep; narrow (apply the narrower scope the item "
            "suggests); suspend; offboard (final for an NHI; a person is disabled and loses "
            "their groups). Signed in with MFA; never on your own access."
        ),
    )  # fmt: skip
    decide.add_argument("item", type=int, metavar="ITEM")
    decide.add_argument("decision", choices=["keep", "narrow", "suspend", "offboard"])
    decide.add_argument("--note", required=True, help="why (kept in the audit trail)")
    add_decider_options(decide)
    decide.set_defaults(handler=cmd_review_decide)
    evidence = review.add_parser(
        "report", help="the evidence of a campaign, for auditors",
        description=(
            "Every item of CAMPAIGN: identity, reviewers, decision, who made it and when, "
            "the note, what it changed, and the data it was decided on."
        ),
    )  # fmt: skip
    evidence.add_argument("campaign", type=int, metavar="CAMPAIGN")
    add_json_option(evidence)
    evidence.set_defaults(handler=cmd_review_report)
    escalate = review.add_parser(
        "escalate", help="escalate overdue items now (serve does it every minute)",
        description="Escalate items past their campaign's due date now. Admin.",
    )  # fmt: skip
    escalate.set_defaults(handler=cmd_review_escalate)


# -- access ---------------------------------------------------------------------------


def _when(value: datetime | None) -> str:
    return f"{value:%Y-%m-%d %H:%M}" if value else "never"


def _limits_text(path: AccessPath) -> str:
    limits = path.limits
    if path.identity_type == "machine":
        text = f"commands {', '.join(limits['commands'])}; max TTL {limits['max_ttl_seconds']}s"
        if limits.get("allow_pty"):
            text += "; pty"
        if limits.get("allow_sftp"):
            text += "; sftp"
        return text
    parts = [f"files {limits['file_transfer']}"]
    if path.via == "approval":
        parts.insert(0, f"approvers {','.join(limits['approver_groups'])} "
                        f"x{limits['approvals_required']}")  # fmt: skip
        if limits.get("break_glass"):
            parts.append("break-glass")
    if "grant_ends_at" in limits:
        parts.append(f"until {limits['grant_ends_at']:%Y-%m-%d %H:%M}")
    if "hours" in limits or "days" in limits:
        parts.append(f"{','.join(limits.get('days', []))} {limits.get('hours', '')}".strip())
    return "; ".join(parts)


def cmd_access_report(args: argparse.Namespace) -> int:
    with open_operator(args) as actions:
        paths = actions.access_report(identity=args.identity, target=args.target)
    if args.json:
        for path in paths:
            print_json_line(path.record())
        return 0
    if args.csv:
        writer = csv.writer(sys.stdout, lineterminator="\n")
        writer.writerow(["identity_type", "identity", "target", "account", "via", "authority",
                         "sources", "status", "last_used", "sessions", "limits"])  # fmt: skip
        for path in paths:
            writer.writerow([
                path.identity_type, path.identity, path.target, path.account, path.via,
                path.authority, " ".join(path.sources), path.status,
                json_time(path.last_used) or "", path.sessions,
                json.dumps(path.limits, default=lambda v: json_time(v) or str(v)),
            ])  # fmt: skip
        return 0
    if not paths:
        print("no access")
        return 0
    print_table(
        ((path.identity_type, path.identity, f"{path.account}@{path.target}", path.via,
          path.authority, ",".join(path.sources) or "anywhere", path.status,
          f"last {_when(path.last_used)}", f"{path.sessions} sessions", _limits_text(path))
         for path in paths),
        header=("TYPE", "IDENTITY", "ACCESS", "VIA", "AUTHORITY", "FROM", "STATUS", "LAST USE",
                "SESSIONS", "LIMITS"),
    )  # fmt: skip
    return 0


def cmd_access_stale(args: argparse.Namespace) -> int:
    days = args.days if args.days is not None else args.loaded_config.reviews.stale_after_days
    with open_operator(args) as actions:
        findings = actions.stale_access(days)
    if args.json:
        for finding in findings:
            print_json_line(finding.record())
    elif not findings:
        print(f"nothing stale or unused in the last {days} days")
    else:
        print_table(
            ((finding.kind, finding.identity, finding.item,
              "EXCESSIVE" if finding.excessive else "stale", finding.detail)
             for finding in findings),
            header=("KIND", "IDENTITY", "ITEM", "", "DETAIL"),
        )  # fmt: skip
    return 3 if findings else 0


def cmd_access_suggest(args: argparse.Namespace) -> int:
    with open_operator(args) as actions:
        names = {machine.name for machine in actions.machines()}
        if args.name in names:
            record = actions.suggest_scope(args.name, args.days).record()
        else:
            record = actions.suggest_groups(args.name, args.days).record()
    if args.json:
        print(json.dumps(record, default=lambda v: json_time(v), indent=2))
        return 0
    print(f"{args.name}: from use since {record['since']:%Y-%m-%d}")
    if "commands" in record:
        if record["unused"]:
            print("  used nothing in that time: suspend or offboard it")
        else:
            print(f"  targets   {', '.join(record['targets'])}")
            print(f"  commands  {', '.join(map(repr, record['commands']))}")
            print(f"  sources   {', '.join(record['sources']) or 'anywhere'}")
            print(f"  pty {'yes' if record['allow_pty'] else 'no'}, "
                  f"sftp {'yes' if record['allow_sftp'] else 'no'}")  # fmt: skip
    else:
        print(f"  groups    {', '.join(record['groups']) or '(none)'}")
    for removed in record["removed"]:
        print(f"  - {removed}")
    if not record["removed"]:
        print("  nothing to narrow: everything it holds was used")
    return 0


# -- review ---------------------------------------------------------------------------


def cmd_review_start(args: argparse.Namespace) -> int:
    due = parse_iso_time(args.due, "--due", expected="an ISO date (2026-12-31) or time")
    if len(args.due) == 10:  # a date: the end of that day
        due = due.replace(hour=23, minute=59, second=59)
    with open_operator(args) as actions:
        campaign = actions.start_review(args.scope, due, args.days)
    total = sum(campaign.counts.values())
    print(f"review campaign #{campaign.id} of {campaign.scope}: {total} items, due "
          f"{json_time(campaign.due_at)}")  # fmt: skip
    return 0


def _state(item: ItemView) -> str:
    if item.decision:
        return f"{item.decision} by {item.decided_by}"
    return "OVERDUE" if item.status == "escalated" else "pending"


def cmd_review_list(args: argparse.Namespace) -> int:
    now = datetime.now(UTC)
    with open_operator(args) as actions:
        if args.campaign is None:
            campaigns = actions.review_campaigns()
            items: list[ItemView] = []
        else:
            campaigns = []
            items = actions.review_items(args.campaign, pending_only=args.pending)
    if args.campaign is None:
        if args.json:
            for campaign in campaigns:
                print_json_line(campaign.record())
            return 0
        if not campaigns:
            print("no review campaigns")
        print_table(_campaign_row(c, now) for c in campaigns)
        return 0
    if args.json:
        for item in items:
            print_json_line({k: v for k, v in item.record().items() if k != "evidence"})
        return 0
    if not items:
        print("no items" if not args.pending else "no pending items")
    print_table(
        (f"#{item.id}", item.identity_type, item.identity, _state(item),
         f"reviewers {', '.join(item.reviewers)}")
        for item in items
    )  # fmt: skip
    return 0


def _campaign_row(campaign: CampaignView, now: datetime) -> tuple[str, ...]:
    counts = ", ".join(f"{n} {status}" for status, n in sorted(campaign.counts.items()))
    due = f"due {campaign.due_at:%Y-%m-%d %H:%M}" + (" OVERDUE" if campaign.overdue(now) else "")
    return (f"#{campaign.id}", campaign.scope, due, counts, f"by {campaign.created_by}")


def cmd_review_show(args: argparse.Namespace) -> int:
    with open_operator(args) as actions:
        item = actions.review_item(args.item)
    if args.json:
        print(json.dumps(item.record(), default=lambda v: json_time(v), indent=2))
        return 0
    _print_item(item)
    return 0


def _print_item(item: ItemView) -> None:
    evidence = item.evidence
    print(f"item #{item.id} (campaign #{item.campaign_id}): {item.identity_type} "
          f"{item.identity}: {_state(item)}")  # fmt: skip
    print(f"  reviewers  {', '.join(item.reviewers)}")
    print(f"  last used  {evidence.get('last_used') or 'never'}")
    for path in evidence.get("paths", []):
        print(f"  access     {path['account']}@{path['target']} via {path['via']} "
              f"({path['authority']}), last {path['last_used'] or 'never'}, "
              f"{path['sessions']} sessions")  # fmt: skip
    for finding in evidence.get("findings", []):
        print(f"  finding    {finding['kind']} {finding['item']}: {finding['detail']}")
    for removed in evidence.get("suggestion", {}).get("removed", []):
        print(f"  narrow     - {removed}")
    if item.decision:
        print(f"  decided    {item.decision} by {item.decided_by} at {json_time(item.decided_at)}: "
              f"{item.note!r}")  # fmt: skip
        if item.applied:
            print(f"  applied    {json.dumps(item.applied)}")


def cmd_review_decide(args: argparse.Namespace) -> int:
    check_decider_options(args, "review decide")
    with open_services(args) as services:
        actions = operator_actions(services, args)
        if getattr(args, "delegated_operator", None) is None:
            # Before the reviewer signing in with --as spends a one-time code on it.
            item = actions.review_item(args.item)
            if item.status == "decided":
                raise PamgateError(f"item #{item.id} was decided already by {item.decided_by}")
        reviewer = signed_in_decider(services, actions, args, "review decide")
        item = reviewer.decide_review(args.item, args.decision, args.note)
    print(f"review item #{item.id} ({item.identity}): {item.decision}"
          + (f"; applied {json.dumps(item.applied)}" if item.applied else ""))  # fmt: skip
    return 0


def cmd_review_report(args: argparse.Namespace) -> int:
    with open_operator(args) as actions:
        campaign = next((c for c in actions.review_campaigns() if c.id == args.campaign), None)
        if campaign is None:
            raise PamgateError(f"no review campaign #{args.campaign}")
        items = actions.review_items(args.campaign, pending_only=False)
    if args.json:
        for item in items:
            print_json_line(item.record())
        return 0
    print(f"campaign #{campaign.id} of {campaign.scope}, started {json_time(campaign.created_at)} "
          f"by {campaign.created_by}, due {json_time(campaign.due_at)}; evidence: use over "
          f"{campaign.stale_days} days")  # fmt: skip
    for item in items:
        _print_item(item)
    return 0


def cmd_review_escalate(args: argparse.Namespace) -> int:
    with open_operator(args) as actions:
        # The webhooks are queued durably: a running node delivers them.
        escalated = actions.escalate_reviews()
    for item in escalated:
        print(f"review item #{item.id} ({item.identity_type} {item.identity}) escalated")
    if not escalated:
        print("no overdue review items")
    return 0
