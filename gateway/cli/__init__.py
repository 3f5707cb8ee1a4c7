"""The ``pamgate`` command line.

Every command takes ``--config PATH`` (or ``$PAMGATE_CONFIG``, or
``./pamgate.toml``). Errors are printed as ``pamgate: error: ...`` and exit
with status 1 (2 for usage and configuration errors). Commands act as the
local administrator, or as the operator ``$PAMGATE_OPERATOR`` names (see
:mod:`~gateway.cli.common`); those on access state go through
:class:`~gateway.domain.operators.OperatorActions`, like the console.

:mod:`~gateway.cli.app` builds the parser from the command groups and runs
:func:`main`; each group is one module with an ``add_commands`` function and
its handlers: :mod:`~gateway.cli.server` (init, serve, demo, console, db,
status, check-config), :mod:`~gateway.cli.users`, :mod:`~gateway.cli.ca`,
:mod:`~gateway.cli.audit`, :mod:`~gateway.cli.recordings` (and replay),
:mod:`~gateway.cli.access` (request, breakglass, grant),
:mod:`~gateway.cli.machines` and :mod:`~gateway.cli.policy`. They share
:mod:`~gateway.cli.common` (the services, who acts, keys and
passwords) and :mod:`~gateway.cli.render` (tables and JSON). Handlers import
what they need when they run, so ``pamgate --help`` stays quick.
"""

import sys
from collections.abc import Sequence

__all__ = ["main"]


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``pamgate`` command: :func:`gateway.cli.app.main`.

    Imported here, inside the handler, so a Ctrl-C while the modules still
    load ends the command quietly with status 130, as it does once running,
    instead of with a traceback.
    """
    try:
        from gateway.cli.app import main as run

        return run(argv)
    except KeyboardInterrupt:
        print(file=sys.stderr)
        return 130
