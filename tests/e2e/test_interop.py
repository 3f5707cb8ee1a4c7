"""Clients other than OpenSSH against the human lane: paramiko, asyncssh, libssh and plink.

Each signs in with a password and a TOTP code, and with a key and a code
where the client can, then runs a command through the gateway on the real
sshd target. paramiko also asks for the ``ssh-userauth`` service again before
each method (sshd allows it until sign-in succeeds; asyncssh alone
disconnects with "Unexpected service in service request"), and retries a
wrong code on the same connection. OpenSSH itself is covered by
tests/e2e/test_human_lane.py.
"""

from __future__ import annotations

import json
import time

import paramiko
import pexpect
import pyotp
import pytest

from gateway.datadir import DataDir
from gateway.domain.audit.trail import Trail
from tests.support import interop_clients as clients
from tests.support.gateway import Gateway, TestUser

pytestmark = pytest.mark.openssh

COMMAND = "echo interop-$((40 + 2))"


def fresh_code(user: TestUser) -> str:
    """A code for a time step nobody used yet: each test user signs in several times."""
    totp = pyotp.TOTP(user.totp_secret)
    used = getattr(user, "_used_steps", set())
    step = int(time.time() // 30)
    while step in used:
        time.sleep(0.5)
        step = int(time.time() // 30)
    used.add(step)
    user._used_steps = used  # type: ignore[attr-defined]
    return totp.at(step * 30)


def successes(gateway: Gateway, name: str) -> list[str]:
    return [
        json.loads(r.details)["method"]
        for r in gateway.audit.events(Trail.HUMAN)
        if r.action == "auth.success" and r.actor == name
    ]


def host_key_line(gateway: Gateway) -> str:
    data = DataDir(gateway.data_dir)
    return data.human_host_key.with_name(data.human_host_key.name + ".pub").read_text()


def test_paramiko_password_then_code(gateway: Gateway) -> None:
    user = gateway.make_user()
    transport = clients.paramiko_transport(gateway.port)
    try:
        clients.paramiko_kbdint(transport, f"{user.name}:web01", user.password,
                                lambda: fresh_code(user))  # fmt: skip
        assert clients.paramiko_run(transport, COMMAND) == b"interop-42\n"
    finally:
        transport.close()
    assert successes(gateway, user.name) == ["password+totp"]


def test_paramiko_key_then_code_with_a_second_service_request(gateway: Gateway) -> None:
    user = gateway.make_user(password=False, key=True)
    assert user.key_path is not None
    key = paramiko.Ed25519Key.from_private_key_file(str(user.key_path))
    transport = clients.paramiko_transport(gateway.port)
    try:
        # The key passes with partial success; paramiko reports the methods still needed.
        remaining = transport.auth_publickey(f"{user.name}:web01", key)
        assert remaining == ["keyboard-interactive"]
        # A second ssh-userauth service request, then the code.
        clients.paramiko_kbdint(transport, f"{user.name}:web01", None, lambda: fresh_code(user))
        assert clients.paramiko_run(transport, COMMAND) == b"interop-42\n"
    finally:
        transport.close()
    assert successes(gateway, user.name) == ["publickey+totp"]


def test_paramiko_retries_a_wrong_code_on_the_same_connection(gateway: Gateway) -> None:
    user = gateway.make_user()
    transport = clients.paramiko_transport(gateway.port)
    try:
        with pytest.raises(paramiko.AuthenticationException):
            clients.paramiko_kbdint(transport, f"{user.name}:web01", user.password,
                                    lambda: "000000")  # fmt: skip
        assert transport.is_active()  # still connected: it may try again, as with sshd
        clients.paramiko_kbdint(transport, f"{user.name}:web01", user.password,
                                lambda: fresh_code(user))  # fmt: skip
        assert clients.paramiko_run(transport, COMMAND) == b"interop-42\n"
    finally:
        transport.close()
    assert successes(gateway, user.name) == ["password+totp"]


async def test_asyncssh_password_and_key(gateway: Gateway) -> None:
    # One user per login, so that neither waits for a fresh TOTP step.
    user, holder = gateway.make_user(), gateway.make_user(password=False, key=True)
    by_password = await clients.asyncssh_run(
        gateway.port, f"{user.name}:web01", COMMAND, password=user.password,
        code=lambda: fresh_code(user),
    )  # fmt: skip
    by_key = await clients.asyncssh_run(
        gateway.port, f"{holder.name}:web01", COMMAND, password=None,
        code=lambda: fresh_code(holder), key_path=holder.key_path,
    )  # fmt: skip
    assert by_password == by_key == b"interop-42\n"
    assert successes(gateway, user.name) == ["password+totp"]
    assert successes(gateway, holder.name) == ["publickey+totp"]


def test_libssh_password_and_key(gateway: Gateway) -> None:
    user, holder = gateway.make_user(), gateway.make_user(password=False, key=True)
    assert holder.key_path is not None and user.password is not None
    by_password = clients.libssh_password_run(
        gateway.port, f"{user.name}:web01", user.password, lambda: fresh_code(user), COMMAND
    )
    by_key = clients.libssh_key_run(
        gateway.port, f"{holder.name}:web01", holder.key_path, fresh_code(holder), COMMAND
    )
    assert by_password == by_key == b"interop-42\n"
    assert successes(gateway, user.name) == ["password+totp"]
    assert successes(gateway, holder.name) == ["publickey+totp"]


def test_plink_password_and_key(gateway: Gateway) -> None:
    user, holder = gateway.make_user(), gateway.make_user(password=False, key=True)
    assert holder.key_path is not None
    host_key = clients.plink_host_key(host_key_line(gateway))
    command = f"{COMMAND}; echo OUTPUT-END"
    by_password = clients.plink_run(
        gateway.port, f"{user.name}:web01", host_key, command, password=user.password,
        code=lambda: fresh_code(user),
    )  # fmt: skip
    by_key = clients.plink_run(
        gateway.port, f"{holder.name}:web01", host_key, command, password=None,
        code=lambda: fresh_code(holder), key=clients.putty_key(holder.key_path),
    )  # fmt: skip
    assert b"interop-42" in by_password and b"interop-42" in by_key
    assert successes(gateway, user.name) == ["password+totp"]
    assert successes(gateway, holder.name) == ["publickey+totp"]


def test_plink_pw_walking_away_at_the_code_prompt_is_audited(gateway: Gateway) -> None:
    """``plink -pw`` answers the password and cannot answer the code: an abandoned attempt."""
    user = gateway.make_user()
    host_key = clients.plink_host_key(host_key_line(gateway))
    argv = clients.plink_command(gateway.port, f"{user.name}:web01", host_key,
                                 extra=("-pw", "a-guess", "-batch"))  # fmt: skip
    child = pexpect.spawn(argv[0], [*argv[1:], "127.0.0.1", "true"], timeout=30)
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus != 0
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        reasons = [r.reason for r in gateway.audit.events(Trail.HUMAN)
                   if r.action == "auth.failure" and r.actor == user.name]  # fmt: skip
        if reasons:
            break
        time.sleep(0.1)
    assert reasons and reasons[0].startswith("abandoned at the verification code prompt"), reasons
