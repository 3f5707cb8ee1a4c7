"""The access domain: identities and sign-in, the access decision, machines,
sessions, audit and file-transfer policy.

Plain Python over the store: nothing here imports asyncssh, textual or argparse
(import-linter holds this), so every decision is testable without a socket.
"""
