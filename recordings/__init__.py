"""Session recordings: the asciicast format, command extraction and escape-safe playback.

- :mod:`recordings.asciicast`: writing as bytes flow, sealing, reading back;
- :mod:`recordings.commands`: command lines read off a terminal emulator;
- :mod:`recordings.terminal`: the emulator (pyte) with the alternate screen;
- :mod:`recordings.sanitize`: what may reach an auditor's terminal;
- :mod:`recordings.player`: replay with an index for seeking.

Imports nothing from ``gateway`` or ``tui``.
"""
