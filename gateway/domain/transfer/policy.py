"""What a session may do with files and forwarded ports, as its rule (or NHI scope) says.

A rule's ``file_transfer`` is one of:

- ``deny`` (the default): no SFTP, no ``scp``, no ``rsync``;
- ``download-only``: read files from the target, change nothing there;
- ``upload-only``: write files to the target (and create, rename, remove,
  change attributes), never read file contents back;
- ``allow``: both.

``file_transfer_max_bytes`` caps each file (SFTP, legacy scp) or, for
rsync, whose protocol the gateway does not parse, the whole stream in the
transfer's direction. ``forward_local`` lists the ``host:port``
destinations ``ssh -L`` may reach, as seen from the target.

Plain Python, no sockets.
"""

from __future__ import annotations

import posixpath
import shlex
from dataclasses import dataclass
from enum import StrEnum

from gateway.config import RuleSettings


class TransferMode(StrEnum):
    """A rule's ``file_transfer`` setting."""

    ALLOW = "allow"
    DOWNLOAD_ONLY = "download-only"
    UPLOAD_ONLY = "upload-only"
    DENY = "deny"


class Direction(StrEnum):
    """Which way file contents move, from the client's point of view."""

    DOWNLOAD = "download"
    UPLOAD = "upload"


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

    def refusal(self, what: str) -> str:
        """A message for a refused operation that says which limit refused it."""
        return f"pamgate: {what} refused: {self.source} allows file transfer {self.mode}"


def transfer_policy_of_rule(rule: RuleSettings | None) -> TransferPolicy:
    """The limits a rule sets; no rule (or an old rule without the setting) means deny."""
    if rule is None:
        return TransferPolicy(TransferMode.DENY, "no rule")
    return TransferPolicy(
        TransferMode(rule.file_transfer), f"rule {rule.id}", rule.file_transfer_max_bytes
    )


@dataclass(frozen=True)
class ExecTransfer:
    """An exec command recognised as a file-transfer tool's server side."""

    tool: str  # "scp" or "rsync"
    direction: Direction
    #: Paths named on the command line (for the audit trail).
    paths: tuple[str, ...]


def classify_exec(command: str) -> ExecTransfer | None:
    """Recognise legacy ``scp -t/-f`` and ``rsync --server`` commands; None for anything else.

    ``scp -f`` (source) sends files: a download; ``scp -t`` (sink) receives
    them: an upload (``-f`` wins when both are given, as in OpenSSH's scp).
    ``rsync --server --sender`` sends: a download; without ``--sender`` it
    receives: an upload.
    """
    try:
        words = shlex.split(command)
    except ValueError:
        words = command.split()
    if not words:
        return None
    program = posixpath.basename(words[0])
    if program == "scp":
        letters = "".join(w[1:] for w in words[1:] if w.startswith("-") and w != "--")
        paths = tuple(w for w in words[1:] if not w.startswith("-"))
        if "f" in letters:
            return ExecTransfer("scp", Direction.DOWNLOAD, paths)
        if "t" in letters:
            return ExecTransfer("scp", Direction.UPLOAD, paths)
        return None
    if program == "rsync" and "--server" in words:
        paths = tuple(w for w in words[1:] if not w.startswith("-") and w != ".")
        direction = Direction.DOWNLOAD if "--sender" in words else Direction.UPLOAD
        return ExecTransfer("rsync", direction, paths)
    return None


def forward_allowed(rule: RuleSettings | None, host: str, port: int) -> bool:
    """Whether ``ssh -L`` may reach ``host:port`` under ``rule`` (exact match, case-insensitive)."""
    if rule is None:
        return False
    wanted = f"{host.lower()}:{port}"
    return any(entry.lower() == wanted for entry in rule.forward_local)
