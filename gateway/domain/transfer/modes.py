"""The words of the file-transfer rules: a rule's mode, and which way contents move."""

from __future__ import annotations

from enum import StrEnum


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
