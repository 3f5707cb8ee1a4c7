"""Recordings as the gateway keeps them: files, their index in the store,
and command extraction.
"""
