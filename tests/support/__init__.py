"""Helpers the tests share: the gateway under test, its database, the console, clocks.

Test modules import from here, never from each other.
"""
