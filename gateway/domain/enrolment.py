"""Showing a TOTP enrolment to a person: the secret, the otpauth URI and a QR code."""

from __future__ import annotations

import io
from typing import TextIO

import segno

from gateway.domain.identities import TotpEnrolment


def render_enrolment(enrolment: TotpEnrolment, stream: TextIO) -> str:
    """A terminal QR code of the otpauth URI if ``stream`` is a TTY, else ''.

    Piped output (logs, scripts) gets no block-character art.
    """
    if not stream.isatty():
        return ""
    buffer = io.StringIO()
    segno.make(enrolment.uri, error="m").terminal(out=buffer, compact=True)
    return buffer.getvalue().rstrip("\n")


def describe_enrolment(enrolment: TotpEnrolment, stream: TextIO) -> str:
    """The full enrolment text for ``pamgate user add`` and ``user reset-mfa``."""
    lines = [
        f"TOTP enrolment for {enrolment.user} (scan the QR code or enter the secret in an "
        "authenticator app):",
        f"  secret       {enrolment.secret}",
        f"  otpauth URI  {enrolment.uri}",
    ]
    qr = render_enrolment(enrolment, stream)
    if qr:
        lines.append(qr)
    return "\n".join(lines)
