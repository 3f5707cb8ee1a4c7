"""Start ssh-mitm's server with one compatibility fix; runs in ssh-mitm's own venv.

ssh-mitm 6.0.1 sends a second EXT_INFO message right after SERVICE_ACCEPT.
OpenSSH clients before 9.6 reject that ("input_userauth_error: bad message
during authentication: type 7") and every login fails. This launcher makes
ssh-mitm skip that one message (the first EXT_INFO, after NEWKEYS, is still
sent); the relay and recording code of ssh-mitm run unchanged.

This file imports nothing from pamgate: it runs under bench/.venv-mitm/bin/python.
"""

import sys

from sshmitm.cli import main
from sshmitm.workarounds import auth_handler

_send_service_accept = auth_handler.auth_handler_parse_service_request


def _service_accept_without_second_ext_info(self, message):  # noqa: ANN001, ANN202
    transport = self.transport
    offered = getattr(transport, "_remote_ext_info", None)
    transport._remote_ext_info = None  # the condition for the second EXT_INFO
    try:
        _send_service_accept(self, message)
    finally:
        transport._remote_ext_info = offered


auth_handler.auth_handler_parse_service_request = _service_accept_without_second_ext_info

if __name__ == "__main__":
    sys.argv[0] = "ssh-mitm"
    sys.exit(main())
