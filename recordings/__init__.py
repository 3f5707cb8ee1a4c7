"""Session recordings: the asciicast format, command extraction and playback.

Imports nothing from ``gateway`` or ``tui``. The recorder arrives with the
recordings work item; the relay in :mod:`gateway.relay` is where it plugs in.
"""
