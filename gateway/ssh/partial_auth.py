"""Multi-factor SSH authentication with partial success, on top of asyncssh.

OpenSSH's ``AuthenticationMethods publickey,keyboard-interactive`` makes a
client pass one method, receive ``SSH_MSG_USERAUTH_FAILURE`` with
*partial success* set and the methods still needed, and then pass the next.
asyncssh's server has no such notion: any method that succeeds completes
authentication. This module adds it by subclassing the server connection:

- when a method succeeds, the connection asks its owner (the
  :class:`MultiFactorServer`) whether authentication is now complete; if not,
  it answers with partial success and the remaining methods instead;
- while a factor has passed, failures advertise only the remaining methods.

It relies on internals of asyncssh 2.24.1 (``_owner``, ``_auth`` and
``send_packet``; listening with a connection subclass is
:mod:`gateway.ssh.listener`), which is why
``pyproject.toml`` pins that exact version. ``tests/test_human_lane.py``
covers the behaviour with the stock OpenSSH client.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import cast

import asyncssh
from asyncssh.auth import ServerAuth
from asyncssh.constants import MSG_USERAUTH_FAILURE
from asyncssh.packet import Boolean, NameList


class MultiFactorServer(asyncssh.SSHServer):
    """An SSH server whose authentication may need more than one method."""

    def method_succeeded(self, method: str) -> bool:
        """Called when ``method`` has just succeeded.

        Return True if authentication is now complete, False if another
        factor is still needed.
        """
        raise NotImplementedError

    def methods_remaining(self) -> Sequence[str] | None:
        """The methods still acceptable after a partial success, or None if no factor passed."""
        raise NotImplementedError


class PartialSuccessServerConnection(asyncssh.SSHServerConnection):
    """An SSH server connection that supports partial-success authentication."""

    async def send_userauth_success(self) -> None:
        owner = self._owner
        # asyncssh types _auth as the Auth base; on a server connection it is
        # always a ServerAuth (lookup_server_auth), which holds the method name.
        auth = cast("ServerAuth | None", self._auth)
        method = auth._method.decode("ascii") if auth is not None else "none"  # noqa: SLF001
        if isinstance(owner, MultiFactorServer) and not owner.method_succeeded(method):
            self._send_failure(partial_success=True)
            return
        await super().send_userauth_success()

    def send_userauth_failure(self, partial_success: bool) -> None:
        owner = self._owner
        if isinstance(owner, MultiFactorServer) and owner.methods_remaining() is not None:
            self._send_failure(partial_success=partial_success)
            return
        super().send_userauth_failure(partial_success)

    def _send_failure(self, *, partial_success: bool) -> None:
        owner = self._owner
        assert isinstance(owner, MultiFactorServer)
        methods = [m.encode("ascii") for m in owner.methods_remaining() or ()]
        self._auth = None
        self.send_packet(MSG_USERAUTH_FAILURE, NameList(methods), Boolean(partial_success))
