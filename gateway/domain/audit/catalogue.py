"""Every action the audit trails record, with its trail and what it means.

The reference documentation's audit event page is generated from this table
(``python -m gateway.cli.reference_docs``), and a test
fails when the code writes an action that is not listed here, or when an
action listed here is no longer written: an auditor reading the docs a year
later finds every event the trail can hold.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class AuditAction:
    """One kind of audit event."""

    #: ``human``, ``machine`` or ``both`` (the trail of the identity or lane concerned).
    trail: str
    #: What happened, for an auditor.
    meaning: str


#: Action name -> trail and meaning, grouped by prefix.
ACTIONS: dict[str, AuditAction] = {
    # Signing in
    "auth.success": AuditAction("human", "a person signed in with both factors (details: method)"),
    "auth.failure": AuditAction(
        "human",
        "a sign-in attempt failed; reason names the stage and cause "
        "(wrong answer, abandoned at a prompt, timer ran out)",
    ),  # fmt: skip
    "auth.factor": AuditAction(
        "human", "one factor succeeded (a registered key); the code follows"
    ),
    "auth.backoff": AuditAction(
        "human", "attempts from a (user, address) or an address are held back after failures"
    ),
    "auth.refused": AuditAction(
        "both",
        "a credential the lane never accepts (a certificate on the human lane, a key "
        "sshd would refuse, a certificate failing a check), with the rule that refused it",
    ),  # fmt: skip
    "auth.accepted": AuditAction("machine", "a machine certificate was accepted (serial, key id)"),
    "auth.code_reused": AuditAction(
        "human", "a right code that was already used: the prompt comes again, saying so"
    ),
    "login_cert.issued": AuditAction(
        "human", "a login certificate was issued (serial, key fingerprint, TTL, source binding)"
    ),
    "login_cert.refused": AuditAction(
        "human", "pamgate-login refused (no code in this sign-in, weak key, bad TTL)"
    ),
    "login_cert.revoked": AuditAction(
        "human", "a user's login certificates were revoked (logout, disable, reset-mfa)"
    ),
    # Sessions and what happens in them
    "session.start": AuditAction("both", "a relayed session started, with its authority"),
    "session.end": AuditAction(
        "both", "a session ended: status, exit status or signal, bytes, recording sha256"
    ),
    "session.interrupted": AuditAction(
        "both", "a session left live by a stopped or crashed node was marked interrupted"
    ),
    "session.terminate_requested": AuditAction("both", "an operator asked to end a live session"),
    "access.refused": AuditAction("human", "the access decision refused a target (reason)"),
    "connection.refused": AuditAction(
        "both",
        "a connection closed before SSH began: a PROXY header from an untrusted "
        "address, or none (or a malformed one) from a trusted balancer",
    ),
    "channel.refused": AuditAction(
        "human", "a channel on a signed-in connection was refused (limit, or access withdrawn)"
    ),
    "forward.opened": AuditAction("human", "an ssh -L connection was opened to an allowed port"),
    "forward.closed": AuditAction("human", "an ssh -L connection closed (bytes, reason)"),
    "command.executed": AuditAction(
        "human", "a command the session's command log found (session, time, text, source, note)"
    ),
    "command.allowed": AuditAction("machine", "a machine identity's command was in its scope"),
    "command.refused": AuditAction("machine", "a machine identity's command was out of scope"),
    "upstream.host_key_mismatch": AuditAction(
        "both", "the target's host key did not match the pinned key; the session was refused"
    ),
    # Files
    "file.opened": AuditAction("both", "a file was opened for reading or writing (SFTP)"),
    "file.closed": AuditAction(
        "both", "a file transfer ended: bytes, sha256 of the content, complete or not"
    ),
    "file.refused": AuditAction("both", "a transfer or file operation the rule does not allow"),
    "file.renamed": AuditAction("both", "a file was renamed over SFTP"),
    "file.removed": AuditAction("both", "a file was removed over SFTP"),
    "file.mkdir": AuditAction("both", "a directory was made over SFTP"),
    "file.rmdir": AuditAction("both", "a directory was removed over SFTP"),
    "file.setstat": AuditAction("both", "a file's attributes were changed over SFTP"),
    # Requests, grants, break-glass
    "request.created": AuditAction("human", "a person asked for access (reason)"),
    "request.approval": AuditAction("human", "one approver approved; more approvals are needed"),
    "request.approved": AuditAction("human", "the request was approved and a grant made"),
    "request.denied": AuditAction("human", "an approver denied the request (comment)"),
    "request.cancelled": AuditAction("human", "the requester gave up waiting"),
    "request.expired": AuditAction("human", "nobody answered the request in time"),
    "request.decision_refused": AuditAction(
        "human", "a decision was refused (own request, not an approver, not pending)"
    ),
    "grant.created": AuditAction("human", "time-boxed access was granted"),
    "grant.revoked": AuditAction("human", "a grant was revoked before its end"),
    "breakglass.invoked": AuditAction("human", "emergency access was taken, with justification"),
    "breakglass.reviewed": AuditAction("human", "a break-glass case was reviewed (verdict, note)"),
    "breakglass.review_refused": AuditAction(
        "human", "a review was refused (own case, not a reviewer, already reviewed)"
    ),
    "alert.sent": AuditAction("both", "a webhook alert was delivered (attempts)"),
    "alert.failed": AuditAction("both", "a webhook alert could not be delivered (last error)"),
    # People
    "user.created": AuditAction("human", "a user was added"),
    "user.disabled": AuditAction("human", "a user was disabled; live sessions end"),
    "user.enabled": AuditAction("human", "a user was enabled again"),
    "user.groups_set": AuditAction("human", "a user's groups changed"),
    "user.key_added": AuditAction("human", "a public key was registered as a first factor"),
    "user.mfa_reset": AuditAction("human", "a user's TOTP secret was replaced"),
    "user.password_set": AuditAction("human", "a user's password was set"),
    "user.unlocked": AuditAction("human", "a user's sign-in throttles were cleared"),
    "operator.refused": AuditAction(
        "human", "an operator action the operator's roles do not allow"
    ),
    # Machines
    "machine.created": AuditAction("machine", "a non-human identity was registered"),
    "machine.suspended": AuditAction("machine", "an identity was suspended"),
    "machine.resumed": AuditAction("machine", "a suspended identity was resumed"),
    "machine.offboarded": AuditAction("machine", "an identity was offboarded for good"),
    "machine.certificate_issued": AuditAction("machine", "a certificate was issued by an admin"),
    "machine.token_created": AuditAction("machine", "a one-time join token was created"),
    "machine.joined": AuditAction("machine", "a workload exchanged a join token for a certificate"),
    "machine.join_refused": AuditAction("machine", "a join was refused (token, key, scope)"),
    "machine.renewed": AuditAction("machine", "a certificate was renewed onto a fresh key"),
    "machine.renew_refused": AuditAction("machine", "a renewal was refused"),
    "machine.generation_mismatch": AuditAction(
        "machine", "an old generation of a credential was used after renewal"
    ),
    "machine.copied_credential": AuditAction(
        "machine", "a credential was used twice (copied): the identity is locked and alerted"
    ),
    "machine.revoked": AuditAction("machine", "a serial, key id or key was revoked (KRL)"),
    "machine.scope_narrowed": AuditAction(
        "machine", "an identity's scope was narrowed by a review decision (the scope before)"
    ),
    "machine.tokens_revoked": AuditAction(
        "machine", "an identity's unused join tokens were revoked"
    ),
    # Entitlement review (in the trail of the identity's type)
    "review.started": AuditAction("both", "a review campaign opened its items"),
    "review.decided": AuditAction(
        "both", "a reviewer decided an item: keep, narrow, suspend or offboard (what it applied)"
    ),
    "review.refused": AuditAction(
        "both", "a review decision was refused (own identity, not a reviewer, already decided)"
    ),
    "review.escalated": AuditAction(
        "both", "an item past its due date was escalated (webhook; suspended if configured)"
    ),
    # Recordings
    "recording.replayed": AuditAction(
        "both", "an auditor replayed a recording (failure: refused, tampered or missing)"
    ),
    "recording.watched": AuditAction("both", "an operator watched a live session"),
    "recording.exported": AuditAction(
        "both", "a recording was exported (failure: refused, tampered or missing, with why)"
    ),
    "recording.verify": AuditAction("both", "a recording failed verification (with why)"),
    "recording.sealed": AuditAction(
        "both", "an interrupted session's recording was sealed as found (sha256, bytes)"
    ),
    # The gateway itself
    "gateway.started": AuditAction("human", "a node started (config digest)"),
    "gateway.stopped": AuditAction("human", "a node stopped"),
    "gateway.worker_died": AuditAction(
        "human",
        "a relay worker process of a node died (reason: how); its live sessions were marked "
        "interrupted and a replacement started",
    ),
    "node.taken_over": AuditAction("human", "a node took over a silent node's live sessions"),
    "node.forgotten": AuditAction("human", "a retired node was removed from the registry"),
    "node.reload_requested": AuditAction("human", "an admin asked a node to reload its policy"),
    "node.reloaded": AuditAction(
        "human", "a node adopted its config's targets and rules (old and new policy sha256)"
    ),
    "node.reload_failed": AuditAction(
        "human", "a node kept its policy: the config file was invalid (the reason)"
    ),
    "node.drain_requested": AuditAction("human", "an admin asked a node to drain by a deadline"),
    "node.draining": AuditAction(
        "human", "a node stopped taking sessions and warned its live ones (deadline)"
    ),
    "node.drained": AuditAction(
        "human", "a draining node ended the sessions left at its deadline and stopped"
    ),
    "node.policy_drift": AuditAction(
        "human", "a node started with targets and rules that differ from a running node's"
    ),
    "ca.created": AuditAction("both", "a CA key was created"),
}


def action(name: str) -> AuditAction:
    """The catalogue entry for ``name`` (KeyError for an action nobody documented)."""
    return ACTIONS[name]
