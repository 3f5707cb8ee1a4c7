"""What a session's transfer policy says of each SFTP request, judged from the request alone.

:class:`SftpRules` answers, for a decoded request, whether the session's
:class:`~gateway.domain.transfer.policy.TransferPolicy` forbids it, with a
:class:`Refusal` (what was asked, and the message the client is told): an
OPEN in a direction the rule does not allow, a change (remove, mkdir,
rmdir, setstat, rename, symlink) where it allows none, an extension that
is not known to be harmless, a path outside an NHI's directories.
:meth:`SftpRules.out_of_scope` is the one place paths are checked.

Reads and writes through an open file are judged by the auditor
(:mod:`gateway.ssh.transfer.sftp_auditor`), which knows the file: its open
mode and the cap's counts.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from gateway.domain.transfer.policy import Direction, TransferMode, TransferPolicy
from gateway.ssh.transfer.sftp import (
    Extended,
    HandleSetstat,
    Open,
    OpenFlags,
    Other,
    PacketType,
    PathRequest,
    Rename,
    Request,
)

#: EXTENDED requests that change nothing and read no file contents.
READ_ONLY_EXTENSIONS = frozenset(
    {
        "statvfs@openssh.com",
        "fstatvfs@openssh.com",
        "limits@openssh.com",
        "expand-path@openssh.com",
        "home-directory",
        "users-groups-by-id@openssh.com",
        "fsync@openssh.com",
    }
)
#: Switches the protocol version mid-channel: the parser would read the wrong format.
VERSION_SELECT = "version-select"


@dataclass(frozen=True)
class Refusal:
    """Why the gateway answers a request itself: what was asked, and the message."""

    what: str
    message: str
    #: The request would cross the cap of its open file (audited once per handle).
    cap: bool = False


def direction_of(flags: OpenFlags) -> Direction | Literal["both"]:
    """Which way an OPEN with these flags moves contents (creating or truncating writes)."""
    reads = bool(flags & OpenFlags.READ)
    writes = bool(flags & (OpenFlags.WRITE | OpenFlags.APPEND | OpenFlags.CREAT | OpenFlags.TRUNC))
    if reads and writes:
        return "both"
    return Direction.UPLOAD if writes else Direction.DOWNLOAD


class SftpRules:
    """Judges SFTP requests against one session's policy (see the module docstring)."""

    def __init__(self, policy: TransferPolicy) -> None:
        self._policy = policy

    def refused(self, request: Request) -> Refusal | None:
        """Why the policy forbids ``request``, or None."""
        policy = self._policy
        changes = policy.allows_changes
        if isinstance(request, Open):
            direction = direction_of(request.flags)
            wanted = (Direction.DOWNLOAD, Direction.UPLOAD) if direction == "both" else (direction,)
            for way in wanted:
                if not policy.allows(way):
                    what = f"{way} of {request.path}"
                    return Refusal(what, policy.refusal(what))
            return self.out_of_scope(request.path)
        if isinstance(request, PathRequest):
            what = f"{request.type.name.lower()} {request.path}"
            if not changes:
                return Refusal(what, policy.refusal(what))
            return self.out_of_scope(request.path)
        if isinstance(request, HandleSetstat):
            return None if changes else Refusal("fsetstat", policy.refusal("fsetstat"))
        if isinstance(request, Rename):
            what = f"rename {request.old} to {request.new}"
            if not changes:
                return Refusal(what, policy.refusal(what))
            return self.out_of_scope(request.old) or self.out_of_scope(request.new)
        if isinstance(request, Extended):
            if request.name == VERSION_SELECT:
                return Refusal(VERSION_SELECT, "pamgate: version-select refused: SFTP 3 only")
            unrestricted = policy.mode == TransferMode.ALLOW and policy.paths is None
            if unrestricted or request.name in READ_ONLY_EXTENSIONS:
                return None
            what = f"extension {request.name[:80]}"
            return Refusal(what, f"pamgate: {what} refused under {policy.source}")
        if isinstance(request, Other) and request.path is not None:
            if request.type == PacketType.SYMLINK:
                if not changes or policy.paths is not None:
                    return Refusal("symlink", f"pamgate: symlink refused under {policy.source}")
                return None
            if request.type != PacketType.REALPATH:
                return self.out_of_scope(request.path)
        return None

    def out_of_scope(self, path: str) -> Refusal | None:
        """The one place paths are checked against the policy's directories."""
        why = self._policy.path_refused_because(path)
        return Refusal(path, f"pamgate: {why} ({self._policy.source})") if why else None
