"""Which escape sequences may reach an auditor's terminal from a recording."""

from __future__ import annotations

import re

#: CSI finals that move, erase, scroll or colour (the screen), never reports.
_SCREEN_FINALS = set("@ABCDEFGHIJKLMPSTXZ`abdefgmrsu")


_SCREEN_MODES = {"1", "4", "6", "7", "12", "20", "25", "47", "1047", "1048", "1049", "2004"}


_CSI = re.compile(r"\x1b\[([0-?]*)([ -/]*)([@-~])")


def dangerous_sequences(text: str) -> list[str]:
    """Sequences in ``text`` that make a terminal answer, leave the screen, or open a string."""
    found = []
    for match in re.finditer(r"\x1b[\]P_^XZc]|[\x80-\x9f]", text):
        found.append(match.group())
    for match in _CSI.finditer(text):
        params, intermediates, final = match.groups()
        if intermediates or final not in _SCREEN_FINALS | {"h", "l"}:
            found.append(match.group())
        elif final in "hl":
            modes = params.removeprefix("?").split(";")
            if params[:1] not in ("", "?") or not set(modes) <= _SCREEN_MODES:
                found.append(match.group())
        elif params[:1] in "<=>?" and params:
            found.append(match.group())
    return found
