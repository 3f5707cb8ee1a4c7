"""The console and administration over SSH: ``bob:console`` and ``bob:admin`` reach the gateway.

``ssh -t bob:console@gw`` serves bob the Textual console; ``ssh bob:admin@gw
COMMAND …`` runs a ``pamgate`` command (``request approve 3 --comment ok``,
``audit tail``, ``replay SESSION`` with ``-t``…) with its output on the SSH
channel. Either way bob already gave both factors on the human lane; the
gateway runs the program itself (:mod:`gateway.ssh.gateway_program`) as a
recorded session of kind ``console`` or ``admin`` on target ``pamgate``, and
hands the operator's name to it. What bob may do there is decided in the
domain by :class:`~gateway.domain.operators.OperatorActions` from his roles
as they are at each action; a person with no console role is refused here.

ssh joins the words of a remote command with spaces and drops the local
quoting, so a command with a quoted argument is written with quotes for the
gateway: ``ssh bob:admin@gw 'request approve 3 --comment "looks right"'``.
"""

from __future__ import annotations

import os
import shlex
import sys

from gateway.config import GatewayConfig
from gateway.domain.identities import UserView
from gateway.domain.operators import OperatorActions
from gateway.errors import AccessDenied, PamgateError
from gateway.ssh.channel import SessionRequest
from gateway.ssh.gateway_program import GatewayProgram

#: What ``USER:NAME@gateway`` reaches instead of a target.
OPERATOR_SERVICES = ("console", "admin")


def operator_program(
    config: GatewayConfig,
    actions: OperatorActions,
    user: UserView,
    service: str,
    request: SessionRequest,
) -> GatewayProgram:
    """The program to run for ``user`` asking for ``service`` (``console`` or ``admin``).

    Raises AccessDenied for a person with no console role, OperatorSignedOut
    for a disabled one, PamgateError for a request that cannot work.
    """
    operator = actions.operator
    if not operator.roles:
        raise AccessDenied(
            f"{user.name} has no console role (approver, auditor or admin): ask an "
            "administrator for membership of one of their groups ([console] in the config)"
        )
    if request.subsystem is not None:
        raise PamgateError(f"{service} takes no subsystem")
    # The child is the gateway's own code: it gets the gateway's environment (the
    # database settings), never the client's, and the operator it acts for.
    env = {
        **os.environ,
        "PAMGATE_CONFIG": str(config.source),
        "PAMGATE_OPERATOR": user.name,
    }
    if service == "console":
        if not request.pty:
            raise PamgateError(f"the console needs a terminal: ssh -t {user.name}:console@GATEWAY")
        if request.command:
            raise PamgateError(f"the console takes no command; for commands use {user.name}:admin")
        argv = [sys.executable, "-m", "tui.remote"]
    else:
        try:
            words = shlex.split(request.command or "--help")
        except ValueError as exc:
            raise PamgateError(f"cannot parse the command: {exc}") from None
        argv = [sys.executable, "-m", "gateway.cli", *words]
    return GatewayProgram(service, argv, env, authority=f"operator:{user.name}")
