"""The Textual console for approvers, auditors and administrators (``pamgate console``).

Signed in, it acts only through :class:`gateway.domain.operators.OperatorActions`,
which checks every action against the operator's current roles, as the CLI and
the SSH-served administration do; it never touches the store itself.
Screens live in :mod:`tui.screens`, one per section; styling is in
``console.tcss``; the bindings that switch sections are declared once, on
:class:`tui.app.PamgateConsole`.
"""
