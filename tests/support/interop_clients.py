"""SSH clients other than OpenSSH, each signing in to the human lane and running a command.

paramiko (Fabric and the tools built on it), asyncssh, libssh (through
ansible-pylibssh's bundled library: its Python wrapper for a key and a code,
ctypes for a password and a code, which the wrapper cannot answer as two
different prompts) and PuTTY's ``plink`` (in a pty, answering its prompts).
Each function returns what the command printed; a refused sign-in raises.
"""

from __future__ import annotations

import ctypes
import glob
import os
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

import asyncssh
import paramiko
import pexpect
import pytest

#: The prompts the human lane shows, lower-cased and stripped.
PASSWORD_PROMPT = "password:"
CODE_PROMPT = "verification code:"

PLINK = shutil.which("plink")
PUTTYGEN = shutil.which("puttygen")


def _answer(prompt: str, password: str | None, code: Callable[[], str]) -> str:
    text = prompt.lower().strip()
    if text.endswith(PASSWORD_PROMPT):
        assert password is not None, "asked for a password on a key login"
        return password
    if text.endswith(CODE_PROMPT):
        return code()
    raise AssertionError(f"unexpected prompt {prompt!r}")


# -- paramiko -------------------------------------------------------------------


def paramiko_transport(port: int) -> paramiko.Transport:
    """A connected paramiko transport (host key not checked: loopback test gateway)."""
    transport = paramiko.Transport(("127.0.0.1", port))
    transport.start_client(timeout=15)
    return transport


def paramiko_kbdint(
    transport: paramiko.Transport, login: str, password: str | None, code: Callable[[], str]
) -> None:
    """keyboard-interactive with paramiko: each call sends its own ``ssh-userauth`` service
    request first, as paramiko does for every method it tries."""

    def handler(title: str, instructions: str, prompts: list[tuple[str, bool]]) -> list[str]:
        return [_answer(text, password, code) for text, _ in prompts]

    transport.auth_interactive(login, handler)


def paramiko_run(transport: paramiko.Transport, command: str) -> bytes:
    channel = transport.open_session(timeout=15)
    channel.exec_command(command)
    output = b""
    while True:
        chunk = channel.recv(65536)
        if not chunk:
            break
        output += chunk
    status = channel.recv_exit_status()
    assert status == 0, (status, output)
    return output


# -- asyncssh ----------------------------------------------------------------------


class _AsyncsshAnswers(asyncssh.SSHClient):
    def __init__(self, password: str | None, code: Callable[[], str]) -> None:
        self._password = password
        self._code = code

    def kbdint_auth_requested(self) -> str:
        return ""

    def kbdint_challenge_received(
        self, name: str, instructions: str, lang: str, prompts: list[tuple[str, bool]]
    ) -> list[str]:
        return [_answer(text, self._password, self._code) for text, _ in prompts]


def asyncssh_connect(
    port: int, login: str, *, password: str | None, code: Callable[[], str],
    key_path: Path | None = None, source: str = "127.0.0.1",
) -> asyncssh.misc._ACMWrapper[asyncssh.SSHClientConnection]:  # fmt: skip
    """A signed-in asyncssh connection (an async context manager)."""
    return asyncssh.connect(
        "127.0.0.1", port, username=login, known_hosts=None, local_addr=(source, 0),
        client_factory=lambda: _AsyncsshAnswers(password, code),
        client_keys=[str(key_path)] if key_path else None, agent_path=None,
        preferred_auth="publickey,keyboard-interactive" if key_path else "keyboard-interactive",
    )  # fmt: skip


async def asyncssh_run(
    port: int, login: str, command: str, *, password: str | None, code: Callable[[], str],
    key_path: Path | None = None,
) -> bytes:  # fmt: skip
    async with asyncssh_connect(
        port, login, password=password, code=code, key_path=key_path
    ) as conn:
        result = await conn.run(command, check=True, encoding=None)
    assert isinstance(result.stdout, bytes)
    return result.stdout


# -- libssh ------------------------------------------------------------------------


def libssh_key_run(port: int, login: str, key_path: Path, code: str, command: str) -> bytes:
    """libssh through ansible-pylibssh's own API: a key (partial success), then the code."""
    from pylibsshext.errors import LibsshSessionException
    from pylibsshext.session import Session

    session = Session()
    try:
        # connect() hangs up when its own sign-in gets only partial success, so it is
        # given nothing to sign in with, and the methods are called one by one.
        with pytest.raises(LibsshSessionException, match="acceptable way to authenticate"):
            session.connect(host="127.0.0.1", port=port, user=login, look_for_keys=False,
                            host_key_checking=False, timeout=15)  # fmt: skip
        with pytest.raises(LibsshSessionException, match="RC=2"):  # SSH_AUTH_PARTIAL
            session.authenticate_specific_pubkey(key_path.read_bytes())
        session.authenticate_interactive(code, expected_prompt=CODE_PROMPT)
        channel = session.new_channel()
        try:
            result = channel.exec_command(command)
        finally:
            channel.close()
        assert result.returncode == 0, result
        return bytes(result.stdout)
    finally:
        session.close()


def _libssh() -> ctypes.CDLL:
    import pylibsshext

    libs = Path(pylibsshext.__file__).parent.parent / "ansible_pylibssh.libs"
    found = glob.glob(str(libs / "libssh-*.so*"))
    assert found, f"no libssh in {libs}"
    lib = ctypes.CDLL(found[0])
    lib.ssh_new.restype = ctypes.c_void_p
    lib.ssh_channel_new.restype = ctypes.c_void_p
    lib.ssh_userauth_kbdint_getprompt.restype = ctypes.c_char_p
    lib.ssh_get_error.restype = ctypes.c_char_p
    for name in ("ssh_options_set", "ssh_connect", "ssh_userauth_none", "ssh_userauth_kbdint",
                 "ssh_userauth_kbdint_getnprompts", "ssh_userauth_kbdint_getprompt",
                 "ssh_userauth_kbdint_setanswer", "ssh_channel_new", "ssh_channel_open_session",
                 "ssh_channel_request_exec", "ssh_channel_read", "ssh_channel_get_exit_status",
                 "ssh_channel_send_eof", "ssh_channel_close", "ssh_channel_free",
                 "ssh_disconnect", "ssh_free", "ssh_get_error"):  # fmt: skip
        getattr(lib, name).argtypes = None
    return lib


# libssh constants (libssh.h)
_SSH_OPTIONS_HOST, _SSH_OPTIONS_PORT, _SSH_OPTIONS_USER = 0, 1, 4
_SSH_OPTIONS_STRICTHOSTKEYCHECK = 17
_SSH_AUTH_SUCCESS, _SSH_AUTH_INFO = 0, 3


def libssh_password_run(
    port: int, login: str, password: str, code: Callable[[], str], command: str
) -> bytes:
    """libssh's C API (the library ansible-pylibssh bundles) through ctypes: keyboard-interactive
    answering ``Password:`` and ``Verification code:``, then an exec channel."""
    lib = _libssh()
    vp = ctypes.c_void_p
    session = vp(lib.ssh_new())
    port_value = ctypes.c_uint(port)
    no = ctypes.c_int(0)
    lib.ssh_options_set(session, _SSH_OPTIONS_HOST, ctypes.c_char_p(b"127.0.0.1"))
    lib.ssh_options_set(session, _SSH_OPTIONS_PORT, ctypes.byref(port_value))
    lib.ssh_options_set(session, _SSH_OPTIONS_USER, ctypes.c_char_p(login.encode()))
    lib.ssh_options_set(session, _SSH_OPTIONS_STRICTHOSTKEYCHECK, ctypes.byref(no))
    try:
        assert lib.ssh_connect(session) == 0, lib.ssh_get_error(session)
        lib.ssh_userauth_none(session, None)
        rc = lib.ssh_userauth_kbdint(session, None, None)
        while rc == _SSH_AUTH_INFO:
            echo = ctypes.c_char()
            for index in range(lib.ssh_userauth_kbdint_getnprompts(session)):
                prompt = lib.ssh_userauth_kbdint_getprompt(session, index, ctypes.byref(echo))
                answer = ctypes.c_char_p(_answer(prompt.decode(), password, code).encode())
                assert lib.ssh_userauth_kbdint_setanswer(session, index, answer) == 0
            rc = lib.ssh_userauth_kbdint(session, None, None)
        assert rc == _SSH_AUTH_SUCCESS, (rc, lib.ssh_get_error(session))
        channel = vp(lib.ssh_channel_new(session))
        assert lib.ssh_channel_open_session(channel) == 0, lib.ssh_get_error(session)
        assert lib.ssh_channel_request_exec(channel, ctypes.c_char_p(command.encode())) == 0
        output = b""
        buffer = ctypes.create_string_buffer(65536)
        while (count := lib.ssh_channel_read(channel, buffer, len(buffer), 0)) > 0:
            output += buffer.raw[:count]
        lib.ssh_channel_send_eof(channel)
        status = lib.ssh_channel_get_exit_status(channel)
        lib.ssh_channel_close(channel)
        lib.ssh_channel_free(channel)
        assert status == 0, (status, output)
        return output
    finally:
        lib.ssh_disconnect(session)
        lib.ssh_free(session)


# -- PuTTY plink -----------------------------------------------------------------------


def plink_host_key(public_key_line: str) -> str:
    """The ``-hostkey`` argument plink takes: the key's SHA256 fingerprint."""
    return str(asyncssh.import_public_key(public_key_line).get_fingerprint("sha256"))


def putty_key(openssh_key: Path) -> Path:
    """The PuTTY (.ppk) form of an OpenSSH private key, made by puttygen."""
    assert PUTTYGEN, "puttygen not found (apt-get install putty-tools)"
    ppk = openssh_key.with_suffix(".ppk")
    subprocess.run([PUTTYGEN, str(openssh_key), "-O", "private", "-o", str(ppk)],
                   check=True, capture_output=True, timeout=30)  # fmt: skip
    return ppk


def plink_command(
    port: int, login: str, host_key: str, *, key: Path | None = None, extra: tuple[str, ...] = ()
) -> list[str]:
    assert PLINK, "plink not found (apt-get install putty-tools)"
    command = [PLINK, "-ssh", "-P", str(port), "-l", login, "-hostkey", host_key,
               "-no-antispoof", "-noagent", *extra]  # fmt: skip
    if key is not None:
        command += ["-i", str(key)]
    return command


def plink_run(
    port: int, login: str, host_key: str, command: str, *, password: str | None,
    code: Callable[[], str], key: Path | None = None,
) -> bytes:  # fmt: skip
    """plink in a pty, answering its keyboard-interactive prompts as a person would."""
    argv = plink_command(port, login, host_key, key=key) + ["127.0.0.1", command]
    env = {k: v for k, v in os.environ.items() if not k.startswith("SSH_")}
    child = pexpect.spawn(argv[0], argv[1:], env=env, timeout=30)
    try:
        while True:
            found = child.expect(
                ["(?i)password: ?", "(?i)verification code: ?", "OUTPUT-END", pexpect.EOF]
            )
            if found == 0:
                child.sendline(password or "")
            elif found == 1:
                child.sendline(code())
            else:
                break
        output = child.before or b""
        child.expect(pexpect.EOF)
    finally:
        child.close()
    assert child.exitstatus == 0, (child.exitstatus, output)
    return bytes(output)
