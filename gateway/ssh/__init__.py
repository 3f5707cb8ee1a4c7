"""The SSH side: listeners, lanes, channels, the relay, the upstream client and
the file-transfer parsers. Thin adapters that turn protocol events into domain calls.
"""
