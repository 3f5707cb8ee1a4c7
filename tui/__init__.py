"""The Textual console for approvers, auditors and administrators (``pamgate console``).

It calls the same domain services as the CLI and the lanes
(:class:`gateway.services.GatewayServices`) and never writes tables itself.
Screens live in :mod:`tui.screens`, one per section; styling is in
``console.tcss``; the bindings that switch sections are declared once, on
:class:`tui.app.PamgateConsole`.
"""
