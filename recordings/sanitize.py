"""Escape-safe output: what a recording may send to an auditor's terminal.

A recording is hostile input. Replaying it must not make the auditor's
terminal answer back (device attributes, status and window reports), write
the clipboard (OSC 52), change the title, show hyperlinks (OSC 8), run
DCS/APC/PM/SOS strings, enable mouse or focus reporting, or do anything else
outside the screen. This filter is an allow-list: colours (SGR), cursor
movement, erasing, scrolling regions and a handful of screen modes pass;
everything else is dropped, whole.

It is incremental: a sequence split across chunks is handled, and an
unterminated string or an absurdly long sequence cannot swallow the stream
for ever.

Imports nothing from ``gateway`` or ``tui``.
"""

from __future__ import annotations

import re

#: Unicode format characters (category Cf: bidi overrides, zero-width spaces and
#: joiners, ...). pyte stops drawing a chunk at the first of them, so a session
#: could hide the rest of its output from replay and command extraction; they
#: have no width, so dropping them changes nothing else on screen.
FORMAT_CHARACTERS = re.compile(
    "[\u00ad\u0600-\u0605\u061c\u06dd\u070f\u0890\u0891\u08e2\u180e\u200b-\u200f"
    "\u202a-\u202e\u2060-\u2064\u2066-\u206f\ufeff\ufff9-\ufffb\U000110bd\U000110cd"
    "\U00013430-\U0001343f\U0001bca0-\U0001bca3\U0001d173-\U0001d17a\U000e0001"
    "\U000e0020-\U000e007f]"
)

ESC = "\x1b"
#: Every control character (C0, DEL, C1), for text that must stay on one line.
_CONTROLS = {c: f"\\x{c:02x}" for c in (*range(0x20), *range(0x7F, 0xA0))}
#: C0 controls that pass: backspace, tab, line feed, carriage return.
_ALLOWED_C0 = {"\b", "\t", "\n", "\r"}
#: Final bytes of plain CSI sequences (no private prefix, no intermediates) that pass.
_ALLOWED_CSI_FINALS = set("@ABCDEFGHIJKLMPSTXZ`abdefgmrsu")
#: Screen modes that may be set or reset (DEC private, with "?").
_ALLOWED_PRIVATE_MODES = {"1", "6", "7", "12", "25", "47", "1047", "1048", "1049", "2004"}
#: Standard modes: insert (4) and automatic newline (20).
_ALLOWED_MODES = {"4", "20"}
#: Single-character escapes that pass: save/restore cursor, index, next line,
#: reverse index, keypad modes.
_ALLOWED_ESC = set("78DEM=>")
#: Character sets that may be designated (ASCII, DEC line drawing, UK).
_ALLOWED_CHARSETS = set("B0A")
#: Introducers of strings that are skipped whole (OSC, DCS, SOS, PM, APC).
_STRING_STARTS = {"]": "osc", "P": "dcs", "X": "sos", "^": "pm", "_": "apc"}
_C1_STRING_STARTS = {"\x9d": "osc", "\x90": "dcs", "\x98": "sos", "\x9e": "pm", "\x9f": "apc"}
#: Longest CSI parameter string accepted; longer ones are dropped.
MAX_CSI = 64
#: Longest string (OSC, DCS, ...) we wait for a terminator; then it is dropped.
MAX_STRING = 1 << 16


#: A run of characters that pass as they are in the ground state (no controls, no ESC).
_PRINTABLE_RUN = re.compile("[^\x00-\x1f\x7f-\x9f]+")


#: A complete CSI sequence, short enough to pass (the state machine handles the rest).
_WHOLE_CSI = re.compile("\x1b\\[([0-?]{0,40}[ -/]{0,4}[@-~])")


class TerminalSanitizer:
    """Filters terminal output down to what acts only on the screen."""

    def __init__(self) -> None:
        self._state = "ground"
        self._sequence: list[str] = []
        self._string_length = 0

    @property
    def in_ground(self) -> bool:
        """True unless the text so far ended inside an escape sequence or string."""
        return self._state == "ground"

    def feed(self, text: str) -> str:
        """Filter a chunk; returns what may be written to the terminal."""
        out: list[str] = []
        position, length = 0, len(text)
        while position < length:
            state = self._state
            if state == "ground":
                # Printable text (most of any recording) is copied a run at a time.
                run = _PRINTABLE_RUN.match(text, position)
                if run is not None:
                    plain = run.group()
                    if not plain.isascii():
                        plain = FORMAT_CHARACTERS.sub("", plain)
                    out.append(plain)
                    position = run.end()
                    continue
                # ... and a whole plain CSI sequence at a time (colours, cursor moves).
                csi = _WHOLE_CSI.match(text, position)
                if csi is not None:
                    allowed = _allowed_csi(csi.group(1))
                    if allowed is not None:
                        out.append(allowed)
                    position = csi.end()
                    continue
            char = text[position]
            position += 1
            if state == "ground":
                self._ground(char, out)
            elif state == "escape":
                self._escape(char, out)
            elif state == "charset":
                if char in _ALLOWED_CHARSETS:
                    out.append("".join(self._sequence) + char)
                self._reset()
            elif state == "csi":
                self._csi(char, out)
            elif state == "string":
                self._string(char)
            elif state == "csi-skip":
                if 0x40 <= ord(char) <= 0x7E:
                    self._reset()
            elif state == "string-escape":
                # ESC \ ends the string; ESC followed by anything else also
                # ends it (as terminals do) and begins a new escape sequence.
                self._reset()
                if char != "\\":
                    self._state, self._sequence = "escape", [ESC]
                    self._escape(char, out)
        return "".join(out)

    def _reset(self) -> None:
        self._state = "ground"
        self._sequence = []
        self._string_length = 0

    def _ground(self, char: str, out: list[str]) -> None:
        code = ord(char)
        if char == ESC:
            self._state, self._sequence = "escape", [ESC]
        elif code >= 0xAD and FORMAT_CHARACTERS.match(char):
            pass  # a bidi override or invisible character could disguise what was typed
        elif code >= 0x20 and code != 0x7F and not 0x80 <= code <= 0x9F or char in _ALLOWED_C0:
            out.append(char)
        elif char == "\x9b":
            self._state, self._sequence = "csi", [ESC, "["]
        elif char in _C1_STRING_STARTS:
            self._state = "string"
        # Every other control (BEL, ENQ, SO/SI, DEL, other C1) is dropped.

    def _escape(self, char: str, out: list[str]) -> None:
        if char == "[":
            self._state = "csi"
            self._sequence.append(char)
        elif char in _STRING_STARTS:
            self._state = "string"
        elif char in "()*+":
            self._state = "charset"
            self._sequence.append(char)
        elif char in _ALLOWED_ESC:
            out.append(ESC + char)
            self._reset()
        elif char == ESC:
            self._sequence = [ESC]  # a lone ESC, then another: start again
        else:
            self._reset()  # RIS, DECID, SS2/SS3, DECALN, ... are dropped

    def _csi(self, char: str, out: list[str]) -> None:
        code = ord(char)
        if 0x40 <= code <= 0x7E:  # final byte
            self._sequence.append(char)
            allowed = _allowed_csi("".join(self._sequence[2:]))
            if allowed is not None:
                out.append(allowed)
            self._reset()
        elif 0x20 <= code <= 0x3F:
            if len(self._sequence) < MAX_CSI:
                self._sequence.append(char)
            else:
                self._state = "csi-skip"  # too long: swallow it up to its final byte
        else:
            # A control inside a CSI, or one that is too long: drop it whole.
            self._reset()
            if char == ESC:
                self._state, self._sequence = "escape", [ESC]

    def _string(self, char: str) -> None:
        self._string_length += 1
        if char == "\x07" or char == "\x9c" or self._string_length > MAX_STRING:
            self._reset()
        elif char == ESC:
            self._state = "string-escape"


def _allowed_csi(body: str) -> str | None:
    """The CSI sequence to emit for ``body`` (parameters + final), or None to drop it."""
    final, parameters = body[-1], body[:-1]
    if parameters.endswith(" ") and final == "q":  # DECSCUSR: cursor shape
        return (
            f"{ESC}[{parameters}{final}" if parameters[:-1].isdigit() or parameters == " " else None
        )
    if any(c in parameters for c in " !\"#$%&'()*+,-./"):
        return None  # intermediates: DECRQM, DECSTR, ... are dropped
    if parameters.startswith("?"):
        if final not in "hl":
            return None
        modes = [m for m in parameters[1:].split(";") if m in _ALLOWED_PRIVATE_MODES]
        return f"{ESC}[?{';'.join(modes)}{final}" if modes else None
    if parameters[:1] in ("<", "=", ">"):
        return None  # secondary DA, modifyOtherKeys, ...: dropped
    if not all(c.isdigit() or c in ";:" for c in parameters):
        return None
    if final in "hl":
        modes = [m for m in parameters.split(";") if m in _ALLOWED_MODES]
        return f"{ESC}[{';'.join(modes)}{final}" if modes else None
    if final not in _ALLOWED_CSI_FINALS:
        return None  # DSR (n), DA (c), window ops (t), printing (i), ...
    return f"{ESC}[{parameters}{final}"


def one_line(text: str) -> str:
    """``text`` with every control character shown as ``\\xNN``: safe, and on one line.

    For untrusted strings printed in line-oriented output (audit listings):
    a newline in a command or reason cannot start a forged line, and no
    escape sequence reaches the terminal.
    """
    return text.translate(_CONTROLS)
