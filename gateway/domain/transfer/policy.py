"""What a session may do with files and forwarded ports, as its rule (or NHI scope) says.

A rule's ``file_transfer`` is one of:

- ``deny`` (the default): no SFTP, no ``scp``, no ``rsync``;
- ``download-only``: read files from the target, change nothing there;
- ``upload-only``: write files to the target (and create, rename, remove,
  change attributes), never read file contents back;
- ``allow``: both.

``file_transfer_max_bytes`` caps each file (SFTP, legacy scp, dd) or, for
rsync, whose protocol the gateway does not parse, the whole stream in the
transfer's direction. ``forward_local`` lists the ``host:port``
destinations ``ssh -L`` may reach, as seen from the target.

:meth:`TransferPolicy.exec_refusal` decides, once for both lanes, whether
a transfer server started by exec (or the SFTP subsystem) may run.

Plain Python, no sockets.
"""

from __future__ import annotations

import posixpath
from dataclasses import dataclass

from gateway.config import RuleSettings
from gateway.domain.transfer.commands import ExecTransfer, UnclearTransfer
from gateway.domain.transfer.modes import Direction, TransferMode

__all__ = ["Direction", "TransferMode", "TransferPolicy", "forward_allowed",
           "transfer_policy_of_rule"]  # fmt: skip


@dataclass(frozen=True)
class TransferPolicy:
    """The file-transfer limits of one session, and the authority that set them."""

    mode: TransferMode
    #: The rule (``rule:ID``) or NHI scope the limits come from, for refusal messages.
    source: str
    max_bytes: int | None = None
    #: Directories the session may touch (machine lane scopes); None means anywhere.
    paths: tuple[str, ...] | None = None

    @property
    def allows_any(self) -> bool:
        """Whether any file transfer is allowed at all."""
        return self.mode != TransferMode.DENY

    def allows(self, direction: Direction) -> bool:
        """Whether file contents may move in ``direction``."""
        if self.mode == TransferMode.ALLOW:
            return True
        if direction == Direction.DOWNLOAD:
            return self.mode == TransferMode.DOWNLOAD_ONLY
        return self.mode == TransferMode.UPLOAD_ONLY

    @property
    def allows_changes(self) -> bool:
        """Whether the session may change the target's files (upload, rename, remove...)."""
        return self.allows(Direction.UPLOAD)

    def path_refused_because(self, path: str) -> str | None:
        """Why ``path`` is out of scope, or None. Relative paths are refused under a scope,
        since the gateway cannot know the home directory they are relative to."""
        if self.paths is None:
            return None
        if not path.startswith("/"):
            return f"{path!r} is not an absolute path inside {', '.join(self.paths)}"
        normal = posixpath.normpath(path)
        if normal.startswith("//"):
            normal = normal[1:]
        for allowed in self.paths:
            root = allowed.rstrip("/") or "/"
            if normal == root or normal.startswith(root + "/") or root == "/":
                return None
        return f"{path!r} is outside the allowed paths ({', '.join(self.paths)})"

    @property
    def restricted(self) -> bool:
        """Whether anything is limited: a mode other than allow, a cap, or directories."""
        return (
            self.mode != TransferMode.ALLOW or self.max_bytes is not None or self.paths is not None
        )

    def refusal(self, what: str) -> str:
        """A message for a refused operation that says which limit refused it."""
        return f"pamgate: {what} refused: {self.source} allows file transfer {self.mode}"

    def exec_refusal(self, found: ExecTransfer | UnclearTransfer) -> str | None:
        """Why this session may not start ``found`` (the SFTP subsystem, or what an exec
        starts); None if it may, audited per file.

        A command the gateway cannot follow is refused unless nothing is
        limited; compression is refused under a cap, since the cap counts
        the stream; a sender's options that write on the target are refused
        where changes are.
        """
        if isinstance(found, UnclearTransfer):
            if not self.restricted:
                return None
            return (
                "pamgate: command refused: it may start a file-transfer server in a way the "
                f"gateway cannot follow ({found.reason}); {self._limits()}"
            )
        if found.direction is None:  # SFTP: each request is decided as it comes
            return None if self.allows_any else self.refusal("SFTP")
        what = f"{found.tool} {found.direction}"
        if not self.allows(found.direction):
            return self.refusal(what)
        if found.changes_target is not None and not self.allows_changes:
            return self.refusal(f"{found.tool} {found.changes_target}")
        if found.compression is not None and self.max_bytes is not None:
            return (
                f"pamgate: {found.tool} compression ({found.compression}) refused: "
                f"{self.source} caps files at {self.max_bytes} bytes, and the gateway "
                "counts the stream, which compression makes smaller than the files"
            )
        if self.paths is not None:
            if not found.paths:
                return f"pamgate: {what} refused: no paths on its command line ({self._limits()})"
            for path in found.paths:
                if (why := self.path_refused_because(path)) is not None:
                    return f"pamgate: {what} refused: {why} ({self.source})"
        return None

    def _limits(self) -> str:
        limits = f"{self.source} allows file transfer {self.mode}"
        if self.max_bytes is not None:
            limits += f" up to {self.max_bytes} bytes a file"
        if self.paths is not None:
            limits += f" in {', '.join(self.paths)}"
        return limits


def transfer_policy_of_rule(rule: RuleSettings | None) -> TransferPolicy:
    """The limits a rule sets; no rule (or an old rule without the setting) means deny."""
    if rule is None:
        return TransferPolicy(TransferMode.DENY, "no rule")
    return TransferPolicy(
        TransferMode(rule.file_transfer), f"rule {rule.id}", rule.file_transfer_max_bytes
    )


def forward_allowed(rule: RuleSettings | None, host: str, port: int) -> bool:
    """Whether ``ssh -L`` may reach ``host:port`` under ``rule`` (exact match, case-insensitive)."""
    if rule is None:
        return False
    wanted = f"{host.lower()}:{port}"
    return any(entry.lower() == wanted for entry in rule.forward_local)
