"""File-transfer policy (what a rule lets a session do with files) and the
report of file events from the trails.
"""
