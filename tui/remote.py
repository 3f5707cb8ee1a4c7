"""The console the gateway serves over SSH (``ssh -t bob:console@gw``), run as its child.

The gateway (:mod:`gateway.ssh.human.operator_session`) starts ``python -m
tui.remote`` on a pseudo-terminal relayed to the SSH channel, with the config
in ``PAMGATE_CONFIG``, the signed-in user in ``PAMGATE_OPERATOR`` (after that
user's two factors on the human lane) and the SSH session in
``PAMGATE_OPERATOR_SESSION``. The console starts signed in as that user, with
their roles as the domain reads them, and unlocks only for them.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from gateway.config import load_config
from gateway.domain.operators import ActionContext
from gateway.errors import PamgateError
from gateway.services import GatewayServices
from tui.app import PamgateConsole


def main() -> int:
    """Serve the console to the operator named by the gateway; 1 with a message if it can't."""
    try:
        config = load_config(Path(os.environ["PAMGATE_CONFIG"]))
        name = os.environ["PAMGATE_OPERATOR"]
        session = os.environ.get("PAMGATE_OPERATOR_SESSION", "")
    except KeyError as missing:
        print(f"pamgate: {missing} is not set: the gateway starts this console", file=sys.stderr)
        return 1
    except PamgateError as exc:
        print(f"pamgate: {exc}", file=sys.stderr)
        return 1
    services = GatewayServices.open(config)
    try:
        user = services.users.get(name)
        if user is None or user.disabled:
            print(f"pamgate: {name} may not use the console", file=sys.stderr)
            return 1
        source = f"ssh-session:{session}" if session else "ssh"
        context = ActionContext(via_session=session or None)
        PamgateConsole(services, source=source, signed_in_as=user, action_context=context).run()
    finally:
        services.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
