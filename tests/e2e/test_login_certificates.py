"""Login certificates end to end: MFA once with ``pamgate-login``, then the stock tools with
no prompt; revocation; ``fresh_mfa``; and the hostile cases (issue 23).

Every case drives the stock ``ssh``, ``scp``, ``sftp`` and ``rsync`` against
the gateway's human lane, relaying to a real sshd target, and checks the
human audit trail.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pexpect
import pyotp
import pytest

from gateway.crypto.certificates import parse_certificate_line
from gateway.domain.audit.trail import Trail
from gateway.services import GatewayServices
from tests.support.certificates import Crafted, crafted_certificate, keygen_sign, raw_login
from tests.support.docs import page
from tests.support.gateway import Gateway, TestUser, launch_gateway

pytestmark = pytest.mark.openssh

RULES = """password_with_code_groups = ["oneprompt"]

[[rules]]
id = "one-prompt-web"
groups = ["pw-rule"]
targets = ["web01"]
mode = "allow"
password_with_code = true

[[rules]]
id = "movers-web"
groups = ["movers"]
targets = ["web01"]
mode = "allow"
file_transfer = "allow"

[[rules]]
id = "careful-web"
groups = ["careful"]
targets = ["web01"]
mode = "allow"
fresh_mfa = true
"""


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    with launch_gateway(tmp_path_factory.mktemp("logincert"), RULES) as running:
        yield running


def events(gateway: Gateway, user: str, action: str) -> list[dict[str, Any]]:
    """The human trail's ``action`` events about ``user`` (as actor or target), flattened."""
    found = []
    for record in gateway.audit.events(Trail.HUMAN):
        if record.action == action and user in (record.actor, (record.target or "")[5:]):
            found.append({
                **json.loads(record.details), "actor": record.actor, "outcome": record.outcome,
                "reason": record.reason, "target": record.target, "authority": record.authority,
                "session": record.session_id, "seq": record.seq,
            })  # fmt: skip
    return found


def new_key(gateway: Gateway, name: str, kind: str = "ed25519") -> Path:
    """A fresh key pair the user has not registered anywhere."""
    key = gateway.root / f"{name}_{kind}_{time.monotonic_ns()}"
    subprocess.run(
        ["ssh-keygen", "-q", "-t", kind, "-N", "", "-f", str(key)], check=True, capture_output=True
    )
    return key


def cert_path(key: Path) -> Path:
    return key.with_name(key.name + "-cert.pub")


def pamgate_login(
    gateway: Gateway, user: TestUser, key: Path, *args: str, code: str | None = None
) -> subprocess.CompletedProcess[bytes]:
    """``ssh user@gw pamgate-login ARGS < KEY.pub > KEY-cert.pub`` with password and code."""
    result = gateway.run_ssh(
        user, None, " ".join(["pamgate-login", *args]), code=code,
        input_bytes=key.with_suffix(".pub").read_bytes(),
    )  # fmt: skip
    if result.returncode == 0:
        cert_path(key).write_bytes(result.stdout)
    return result


def cert_options(gateway: Gateway, key: Path, *, batch: bool = True) -> list[str]:
    """Stock ssh options that use ``key`` and the ``KEY-cert.pub`` next to it (found by ssh
    itself), no config, no agent; BatchMode: any prompt is a failure."""
    options = [
        "-F", "/dev/null", "-o", f"UserKnownHostsFile={gateway.known_hosts}",
        "-o", "StrictHostKeyChecking=yes", "-o", "IdentityAgent=none",
        "-o", "IdentitiesOnly=yes", "-i", str(key), "-o", "ConnectTimeout=10",
    ]  # fmt: skip
    if batch:
        options += ["-o", "BatchMode=yes"]
    return options


def cert_ssh(
    gateway: Gateway, login: str, key: Path, command: str, *, extra: tuple[str, ...] = (),
    timeout: float = 30,
) -> subprocess.CompletedProcess[bytes]:  # fmt: skip
    return subprocess.run(
        ["ssh", *extra, *cert_options(gateway, key), "-p", str(gateway.port),
         f"{login}@127.0.0.1", command],
        stdin=subprocess.DEVNULL, capture_output=True, timeout=timeout,
    )  # fmt: skip


def successes(gateway: Gateway, user: str, method: str) -> list[dict[str, Any]]:
    return [e for e in events(gateway, user, "auth.success") if e["method"] == method]


# -- MFA once, then the stock tools with no prompt ------------------------------------


def test_login_once_then_twenty_commands_without_a_prompt(
    gateway: Gateway, tmp_path: Path
) -> None:
    """The issue's "done when": one pamgate-login with password + code, then 20 ssh, scp,
    sftp and rsync commands with BatchMode=yes, each one in the trail as a login-cert
    sign-in and a session; after ``user logout`` the next is refused and a live session
    ends within 2 s."""
    user = gateway.make_user(groups=("movers",))
    key = new_key(gateway, user.name)
    got = pamgate_login(gateway, user, key)
    assert got.returncode == 0, got.stderr
    certificate = parse_certificate_line(cert_path(key).read_text())
    assert certificate.principals == (user.name,)
    assert certificate.key_id == f"pamgate-login user={user.name} serial={certificate.serial}"
    assert 8 * 3600 - 10 <= certificate.valid_before - time.time() <= 8 * 3600
    assert b"login certificate serial" in got.stderr
    issued = events(gateway, user.name, "login_cert.issued")
    assert len(issued) == 1
    assert issued[0]["serial"] == certificate.serial
    assert issued[0]["key"] == certificate.key_fingerprint
    assert issued[0]["ttl_seconds"] == 8 * 3600
    assert issued[0]["source_address"] is None
    assert issued[0]["authority"] == "sign-in:password+totp"
    mfa_at = issued[0]["mfa_at"]

    login = f"{user.name}:web01"
    local = tmp_path / "up.bin"
    local.write_bytes(b"pamgate " * 4096)
    options = cert_options(gateway, key)
    remote = f"/tmp/{user.name}"
    commands: list[list[str]] = []
    for index in range(5):
        commands.append(["ssh", *options, "-p", str(gateway.port), f"{login}@127.0.0.1",
                         f"echo ssh-{index}"])  # fmt: skip
        commands.append(["scp", *options, "-P", str(gateway.port), "-o", f"User={login}",
                         str(local), f"127.0.0.1:{remote}-scp-{index}"])  # fmt: skip
        commands.append(["sftp", *options, "-P", str(gateway.port), "-o", f"User={login}",
                         "-b", "-", "127.0.0.1"])  # fmt: skip
        ssh_e = " ".join(["ssh", *options, "-p", str(gateway.port), "-o", f"User={login}"])
        commands.append(["rsync", "-e", ssh_e, str(local), f"127.0.0.1:{remote}-rsync-{index}"])
    started = time.monotonic()
    for index, command in enumerate(commands):
        batch = f"put {local} {remote}-sftp-{index}\n".encode() if command[0] == "sftp" else None
        result = subprocess.run(
            command, input=batch, stdin=None if batch else subprocess.DEVNULL,
            capture_output=True, timeout=60,
        )  # fmt: skip
        assert result.returncode == 0, (command[0], result.stderr)
        if command[0] == "ssh":
            assert result.stdout.strip().startswith(b"ssh-")
    elapsed = time.monotonic() - started
    print(f"20 commands with a login certificate in {elapsed:.1f} s")

    signed_in = successes(gateway, user.name, "login-cert")
    assert len(signed_in) == 20
    assert all(e["serial"] == certificate.serial and e["mfa_at"] == mfa_at for e in signed_in)
    sessions = events(gateway, user.name, "session.start")
    assert len(sessions) == 20
    assert all(e["authority"] == "policy:movers-web" for e in sessions)
    assert len(successes(gateway, user.name, "password+totp")) == 1  # pamgate-login's

    # Logged out by an administrator: a live session ends within 2 s, the next login fails.
    live = subprocess.Popen(
        ["ssh", *options, "-p", str(gateway.port), f"{login}@127.0.0.1", "echo up; sleep 60"],
        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip
    assert live.stdout is not None and live.stdout.readline() == b"up\n"
    asked = time.monotonic()
    out = gateway.cli("user", "logout", user.name)
    assert out.returncode == 0, out.stderr
    logged_out = time.monotonic()
    assert f"1 login certificate(s) revoked (serials {certificate.serial})" in out.stdout
    live.wait(timeout=10)
    ended = time.monotonic()
    print(f"live session ended {ended - logged_out:.2f} s after 'user logout' returned "
          f"({ended - asked:.2f} s after it was started)")
    assert ended - logged_out < 2.0
    assert b"revoked (logout)" in live.stderr.read()  # type: ignore[union-attr]
    refused = cert_ssh(gateway, login, key, "echo again")
    assert refused.returncode == 255
    assert b"Permission denied" in refused.stderr
    revoked = events(gateway, user.name, "login_cert.revoked")
    assert revoked[-1]["serials"] == [certificate.serial]
    assert revoked[-1]["reason"] == "logout"
    # The refusal is audited as the refused client's connection closes, not before ssh exits.
    needle = f"login certificate serial {certificate.serial} was revoked (logout)"
    assert needle in wait_for_reason(gateway, user.name, needle)
    ends = events(gateway, user.name, "session.end")
    assert any("revoked (logout)" in str(e.get("reason")) for e in ends)


def test_self_logout_revokes_and_a_certificate_cannot_renew_itself(gateway: Gateway) -> None:
    user = gateway.make_user(groups=("movers",))
    key = new_key(gateway, user.name)
    assert pamgate_login(gateway, user, key, "--ttl", "2h").returncode == 0
    assert 2 * 3600 - 5 <= parse_certificate_line(cert_path(key).read_text()).valid_before - \
        time.time() <= 2 * 3600  # fmt: skip
    # A login certificate alone never buys the next one.
    again = subprocess.run(
        ["ssh", *cert_options(gateway, key), "-p", str(gateway.port), f"{user.name}@127.0.0.1",
         "pamgate-login"],
        input=key.with_suffix(".pub").read_bytes(), capture_output=True, timeout=30,
    )  # fmt: skip
    assert again.returncode == 1
    assert b"needs a sign-in with your verification code" in again.stderr
    assert events(gateway, user.name, "login_cert.refused")
    listed = gateway.cli("user", "login-certs", user.name, "--json")
    assert listed.returncode == 0, listed.stderr
    serial = parse_certificate_line(cert_path(key).read_text()).serial
    assert [json.loads(line)["serial"] for line in listed.stdout.splitlines()] == [serial]
    helped = cert_ssh(gateway, user.name, key, "pamgate-login --help")
    assert helped.returncode == 0 and b"--bind-source" in helped.stdout
    shown = gateway.cli("ca", "show", "login")
    assert shown.stdout == (gateway.data_dir / "keys" / "login_ca.pub").read_text()
    out = cert_ssh(gateway, user.name, key, "pamgate-logout")
    assert out.returncode == 0, out.stderr
    assert b"1 login certificate(s) revoked" in out.stderr
    assert cert_ssh(gateway, f"{user.name}:web01", key, "true").returncode == 255
    revoked = events(gateway, user.name, "login_cert.revoked")
    assert revoked[-1]["actor"] == user.name and revoked[-1]["authority"] == "self-service"
    assert gateway.cli("user", "login-certs", user.name).stdout == "no login certificates in use\n"


@pytest.mark.parametrize("how", ["disable", "reset-mfa"])
def test_disable_and_mfa_reset_revoke_login_certificates(gateway: Gateway, how: str) -> None:
    user = gateway.make_user(groups=("movers",))
    key = new_key(gateway, user.name)
    assert pamgate_login(gateway, user, key).returncode == 0
    assert cert_ssh(gateway, f"{user.name}:web01", key, "true").returncode == 0
    assert gateway.cli("user", how, user.name).returncode == 0
    if how == "disable":
        assert gateway.cli("user", "enable", user.name).returncode == 0  # enabling revives none
    assert cert_ssh(gateway, f"{user.name}:web01", key, "true").returncode == 255
    reason = "user disabled" if how == "disable" else "MFA reset"
    assert events(gateway, user.name, "login_cert.revoked")[-1]["reason"] == reason


def test_control_master_multiplexes_until_logout(gateway: Gateway) -> None:
    """ControlMaster: one certificate sign-in, commands over it with no prompt; every new
    channel asks again, so after ``user logout`` the master opens nothing more."""
    user = gateway.make_user(groups=("movers",))
    key = new_key(gateway, user.name)
    assert pamgate_login(gateway, user, key).returncode == 0
    login = f"{user.name}:web01@127.0.0.1"
    folder = tempfile.mkdtemp(prefix="pg-cm-", dir="/tmp")  # socket paths are short
    socket_path = Path(folder) / "cm"
    base = ["ssh", *cert_options(gateway, key), "-p", str(gateway.port),
            "-o", f"ControlPath={socket_path}"]  # fmt: skip
    master = subprocess.Popen([*base, "-M", "-N", login], stdin=subprocess.DEVNULL,
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)  # fmt: skip
    try:
        deadline = time.monotonic() + 15
        while not socket_path.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert socket_path.exists()
        client = [*base, "-o", "ControlMaster=no", login]
        for index in range(3):
            ran = subprocess.run([*client, f"echo mux-{index}"], stdin=subprocess.DEVNULL,
                                 capture_output=True, timeout=30)  # fmt: skip
            assert ran.returncode == 0 and ran.stdout == f"mux-{index}\n".encode(), ran.stderr
        assert len(successes(gateway, user.name, "login-cert")) == 1  # one sign-in for all
        assert len(events(gateway, user.name, "session.start")) == 3
        assert gateway.cli("user", "logout", user.name).returncode == 0
        after = subprocess.run([*client, "echo mux-after"], stdin=subprocess.DEVNULL,
                               capture_output=True, timeout=30)  # fmt: skip
        assert after.returncode != 0 and b"mux-after" not in after.stdout
        assert b"was revoked (logout)" in after.stderr
        refused = events(gateway, user.name, "access.refused")
        assert "was revoked (logout)" in refused[-1]["reason"]
    finally:
        master.terminate()
        master.wait(timeout=10)


def test_a_certificate_without_its_private_key_gets_nowhere(gateway: Gateway) -> None:
    """A hostile client with a copy of alice's certificate (public, in her home directory)
    but another private key: the signature does not verify, nothing is signed in."""
    user = gateway.make_user(groups=("movers",))
    key = new_key(gateway, user.name)
    assert pamgate_login(gateway, user, key).returncode == 0
    thief = new_key(gateway, "thief")
    result = raw_login(
        gateway.port, f"{user.name}:web01", thief, certificate=cert_path(key).read_text(),
        command="echo stolen", known_hosts=gateway.known_hosts,
    )  # fmt: skip
    assert isinstance(result, Exception), result
    assert not successes(gateway, user.name, "login-cert")
    assert not events(gateway, user.name, "session.start")


# -- fresh_mfa ------------------------------------------------------------------------


def test_fresh_mfa_rule_still_asks_for_the_code(gateway: Gateway, tmp_path: Path) -> None:
    user = gateway.make_user(groups=("careful",))
    key = new_key(gateway, user.name)
    assert pamgate_login(gateway, user, key).returncode == 0
    # BatchMode: no prompt can be answered, so the certificate alone gets nowhere.
    assert cert_ssh(gateway, f"{user.name}:web01", key, "true").returncode == 255
    # With a prompt: asked for the code only (the certificate is the first factor).
    log = tmp_path / "prompts"
    env = gateway.ssh_env(user, code=None, log=log)
    env["PG_TOTP_CODE"] = pyotp.TOTP(user.totp_secret).at(time.time() + 30)
    result = subprocess.run(
        ["ssh", *cert_options(gateway, key, batch=False), "-o", "NumberOfPasswordPrompts=1",
         "-p", str(gateway.port), f"{user.name}:web01@127.0.0.1", "echo fresh"],
        env=env, stdin=subprocess.DEVNULL, capture_output=True, timeout=30,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert result.stdout == b"fresh\n"
    assert log.read_text().splitlines() == ["Verification code:"]
    assert len(successes(gateway, user.name, "login-cert+totp")) == 1
    factor = events(gateway, user.name, "auth.factor")[-1]
    assert factor["factor"] == "login-cert" and factor["fresh_mfa_rule"] == "careful-web"


def test_menu_refuses_a_fresh_mfa_target_on_a_certificate_alone(gateway: Gateway) -> None:
    """No target in the login name, so no code at sign-in: the menu's choice of a fresh_mfa
    target is refused, saying how to get the code asked."""
    user = gateway.make_user(groups=("careful",))
    key = new_key(gateway, user.name)
    assert pamgate_login(gateway, user, key).returncode == 0
    command = ["ssh", "-tt", *cert_options(gateway, key), "-p", str(gateway.port),
               f"{user.name}@127.0.0.1"]  # fmt: skip
    child = pexpect.spawn(command[0], command[1:], timeout=15, env={"TERM": "xterm"})
    try:
        child.expect(r"(\d+)\) web01 ")
        number = child.match.group(1).decode()
        child.expect("Target \\(number")
        child.send(f"{number}\r")
        child.expect("rule 'careful-web' asks for a fresh verification code")
        child.expect(f"log in as {user.name}:web01 to be asked for one")
        child.expect("Target \\(number")  # the menu asks again, as after any refusal
        child.send("\x03")
        child.expect(pexpect.EOF)
    finally:
        child.close()
    assert not events(gateway, user.name, "session.start")


# -- hostile certificates -------------------------------------------------------------


def refusal_reasons(gateway: Gateway, user: str) -> list[str]:
    return [e["reason"] for e in events(gateway, user, "auth.refused")]


def wait_for_reason(gateway: Gateway, user: str, needle: str) -> list[str]:
    deadline = time.monotonic() + 15  # generous: CI machines are busy
    while True:
        reasons = refusal_reasons(gateway, user)
        if any(needle in r for r in reasons) or time.monotonic() > deadline:
            return reasons
        time.sleep(0.05)


def test_expired_certificate_is_refused(gateway: Gateway) -> None:
    user = gateway.make_user(groups=("movers",))
    key = new_key(gateway, user.name)
    cert_path(key).write_text(crafted_certificate(
        gateway.data_dir / "keys" / "login_ca", key,
        Crafted(principals=[user.name], serial=1, valid_after=-120, valid_before=-1),
    ) + "\n")  # fmt: skip
    assert cert_ssh(gateway, f"{user.name}:web01", key, "true").returncode == 255
    assert any("has expired" in r for r in wait_for_reason(gateway, user.name, "has expired"))


def test_certificate_from_another_ca_is_refused(gateway: Gateway) -> None:
    user = gateway.make_user(groups=("movers",))
    key = new_key(gateway, user.name)
    other_ca = new_key(gateway, "otherca")
    keygen_sign(other_ca, key, "-n", user.name, "-V", "-1m:+1h")
    assert cert_ssh(gateway, f"{user.name}:web01", key, "true").returncode == 255
    reasons = wait_for_reason(gateway, user.name, "not signed by the login CA")
    assert any("not signed by the login CA" in r for r in reasons)
    # Nor the machine CA's.
    keygen_sign(gateway.data_dir / "keys" / "machine_ca", key, "-n", user.name, "-V", "-1m:+5m")
    assert cert_ssh(gateway, f"{user.name}:web01", key, "true").returncode == 255
    reasons = wait_for_reason(gateway, user.name, "machine certificate")
    assert any("machine certificate (machine CA)" in r for r in reasons)


def test_certificate_for_another_principal_is_refused(gateway: Gateway) -> None:
    alice = gateway.make_user(groups=("movers",))
    mallory = gateway.make_user(groups=("movers",))
    key = new_key(gateway, alice.name)
    assert pamgate_login(gateway, alice, key).returncode == 0
    assert cert_ssh(gateway, f"{mallory.name}:web01", key, "true").returncode == 255
    reasons = wait_for_reason(gateway, mallory.name, "principals do not include")
    assert any(f"principals do not include {mallory.name!r}" in r for r in reasons)


def test_certificate_the_gateway_never_issued_is_refused(gateway: Gateway) -> None:
    """Signed with the login CA key itself (a stolen key, or a hand-made certificate): the
    serial must be one the gateway recorded for that user and key."""
    user = gateway.make_user(groups=("movers",))
    key = new_key(gateway, user.name)
    cert_path(key).write_text(crafted_certificate(
        gateway.data_dir / "keys" / "login_ca", key,
        Crafted(principals=[user.name], serial=987654321, valid_before=600,
                extensions=[("permit-pty", b"")]),
    ) + "\n")  # fmt: skip
    assert cert_ssh(gateway, f"{user.name}:web01", key, "true").returncode == 255
    reasons = wait_for_reason(gateway, user.name, "never issued")
    assert any(f"never issued serial 987654321 to {user.name}" in r for r in reasons)


def test_source_bound_certificate_works_only_from_its_address(gateway: Gateway) -> None:
    user = gateway.make_user(groups=("movers",))
    key = new_key(gateway, user.name)
    got = pamgate_login(gateway, user, key, "--bind-source")
    assert got.returncode == 0, got.stderr
    assert b"only from 127.0.0.1" in got.stderr
    assert events(gateway, user.name, "login_cert.issued")[-1]["source_address"] == "127.0.0.1"
    login = f"{user.name}:web01"
    assert cert_ssh(gateway, login, key, "true").returncode == 0
    elsewhere = cert_ssh(gateway, login, key, "true", extra=("-b", "127.0.0.2"))
    assert elsewhere.returncode == 255
    reasons = wait_for_reason(gateway, user.name, "outside the certificate's networks")
    assert any("source 127.0.0.2 is outside the certificate's networks" in r for r in reasons)


def test_a_login_certificate_is_refused_on_the_machine_lane(gateway: Gateway) -> None:
    """Two lanes, two CAs: a person's login certificate is no machine credential."""
    user = gateway.make_user(groups=("movers",))
    key = new_key(gateway, user.name)
    assert pamgate_login(gateway, user, key).returncode == 0
    result = subprocess.run(
        ["ssh", *cert_options(gateway, key), "-p", str(gateway.machine_port),
         f"{user.name}:web01@127.0.0.1", "true"],
        stdin=subprocess.DEVNULL, capture_output=True, timeout=30,
    )  # fmt: skip
    assert result.returncode == 255
    deadline = time.monotonic() + 5
    reasons: list[str] = []
    while not reasons and time.monotonic() < deadline:
        reasons = [r.reason for r in gateway.audit.events(Trail.MACHINE)
                   if r.action == "auth.refused" and r.actor == user.name]  # fmt: skip
        time.sleep(0.05)
    assert reasons == ["the certificate is not signed by the machine CA"]


def test_weak_keys_get_no_certificate(gateway: Gateway) -> None:
    user = gateway.make_user(groups=("movers",))
    key = new_key(gateway, user.name, "dsa")
    got = pamgate_login(gateway, user, key)
    assert got.returncode == 1
    assert b"ssh-dss (DSA, SHA-1) keys are not accepted" in got.stderr
    garbage = gateway.run_ssh(user, None, "pamgate-login", input_bytes=b"not a key\n",
                              code=pyotp.TOTP(user.totp_secret).at(time.time() + 30))
    assert garbage.returncode == 1
    assert b"not a public key" in garbage.stderr
    refused = events(gateway, user.name, "login_cert.refused")
    assert len(refused) == 2
    assert not events(gateway, user.name, "login_cert.issued")


def test_ttl_beyond_the_maximum_is_refused(gateway: Gateway) -> None:
    user = gateway.make_user(groups=("movers",))
    key = new_key(gateway, user.name)
    got = pamgate_login(gateway, user, key, "--ttl", "2d")
    assert got.returncode == 1
    assert b"--ttl must be between 1 min and 1440 min" in got.stderr
    bad = gateway.run_ssh(user, None, "pamgate-login --ttel 1h", input_bytes=b"",
                          code=pyotp.TOTP(user.totp_secret).at(time.time() + 30))
    assert bad.returncode == 1
    assert b"usage: pamgate-login" in bad.stderr
    assert not cert_path(key).exists()


# -- one prompt for both factors (sshpass, plink -pw); a code used a moment ago -------


@pytest.mark.parametrize("group", ["oneprompt", "pw-rule"])
def test_password_with_the_code_appended_in_one_prompt(
    gateway: Gateway, tmp_path: Path, group: str
) -> None:
    """Opted in by ``[auth] password_with_code_groups`` or by the rule: the password prompt
    takes PASSWORD+CODE and no code prompt follows; audited as both factors."""
    user = gateway.make_user(groups=(group, "movers") if group == "oneprompt" else (group,))
    assert user.password is not None
    log = tmp_path / "prompts"
    combined = user.password + pyotp.TOTP(user.totp_secret).now()
    result = gateway.run_ssh(user, "web01", "echo in", password=combined, log=log,
                             source="127.0.23.1")  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert result.stdout == b"in\n"
    assert log.read_text().splitlines() == ["Password:"]
    success = successes(gateway, user.name, "password+totp")[-1]
    assert success["answer"] == "password and code in one prompt"


def test_password_with_code_is_refused_unless_opted_in(gateway: Gateway, tmp_path: Path) -> None:
    user = gateway.make_user(groups=("movers",))
    assert user.password is not None
    log = tmp_path / "prompts"
    combined = user.password + pyotp.TOTP(user.totp_secret).now()
    result = gateway.run_ssh(user, "web01", "true", password=combined, log=log,
                             code="000000", source="127.0.23.2")  # fmt: skip
    assert result.returncode == 255
    assert log.read_text().splitlines() == ["Password:", "Verification code:"]
    assert events(gateway, user.name, "auth.failure")[-1]["reason"] == "wrong password"


def test_wrong_password_with_code_still_shows_the_code_prompt(
    gateway: Gateway, tmp_path: Path
) -> None:
    """A hostile client learns nothing from the answer: a wrong combined answer gets the code
    prompt like any wrong password, and is one counted, audited attempt."""
    user = gateway.make_user(groups=("oneprompt",))
    log = tmp_path / "prompts"
    wrong = "not-the-password" + pyotp.TOTP(user.totp_secret).now()
    result = gateway.run_ssh(user, "web01", "true", password=wrong, log=log,
                             source="127.0.23.3")  # fmt: skip
    assert result.returncode == 255
    assert log.read_text().splitlines() == ["Password:", "Verification code:"]
    failures = events(gateway, user.name, "auth.failure")
    assert [f["reason"] for f in failures] == ["wrong password"]
    assert failures[0]["answer"] == "password and code in one prompt"


def test_a_code_used_a_moment_ago_gets_the_prompt_again_saying_so(
    gateway: Gateway, tmp_path: Path
) -> None:
    user = gateway.make_user(groups=("movers",))
    totp = pyotp.TOTP(user.totp_secret)
    used = totp.now()
    assert gateway.run_ssh(user, "web01", "true", code=used, source="127.0.23.4").returncode == 0
    # The second login answers the same code first, then the next one.
    log = tmp_path / "prompts"
    askpass = tmp_path / "askpass.py"
    askpass.write_text(f"""#!{sys.executable}
import re, sys
prompt = re.sub(r"^\\(.*?\\) ", "", sys.argv[1] if len(sys.argv) > 1 else "").strip()
with open({str(log)!r}, "a") as handle:
    handle.write(prompt + "\\n")
if "Password" in prompt:
    print({user.password!r})
else:
    asked = open({str(log)!r}).read().count("Verification code")
    print({used!r} if asked == 1 else {totp.at(time.time() + 30)!r})
""")
    askpass.chmod(0o755)
    env = gateway.ssh_env(user)
    env["SSH_ASKPASS"] = str(askpass)
    result = subprocess.run(
        gateway.ssh_command(f"{user.name}:web01", source="127.0.23.4") + ["echo again"],
        env=env, stdin=subprocess.DEVNULL, capture_output=True, timeout=60,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert b"that code was already used; wait for the next one" in result.stderr
    assert log.read_text().splitlines() == ["Password:", "Verification code:",
                                            "Verification code:"]  # fmt: skip
    assert len(events(gateway, user.name, "auth.code_reused")) == 1
    assert not events(gateway, user.name, "auth.failure")


# -- the documented blocks (docs/concepts/login-certificates.md), verbatim ------------------


def readme_block(marker: str) -> str:
    readme = page("concepts/login-certificates.md")
    block = readme.split(f"<!-- {marker} -->")[1].split(f"<!-- /{marker} -->")[0]
    return block.split("```", 1)[1].split("\n", 1)[1].rsplit("```", 1)[0]


def test_readme_login_once_block_runs_with_stock_openssh(
    gateway: Gateway, services: GatewayServices, tmp_path: Path
) -> None:
    """The Quick tour's block as it is written (the README's own alice), then its
    ``~/.ssh/config`` snippet pointed at this gateway."""
    enrolment = gateway.users.add_user(
        "alice", actor="tests", groups=("movers",), password="alice-readme-secret"
    )
    alice = TestUser("alice", "alice-readme-secret", enrolment.secret)
    home = tmp_path / "home"
    (home / ".ssh").mkdir(parents=True)
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f",
                    str(home / ".ssh" / "id_ed25519")], check=True)  # fmt: skip
    # The stock tools, with no config of this machine's user and the gateway's host key
    # pinned (ssh reads ~/.ssh from the password database, not $HOME).
    pinned = f"-F /dev/null -o UserKnownHostsFile={gateway.known_hosts} -o IdentitiesOnly=yes"
    wrappers = "".join(
        f"{tool}() {{ command {tool} {pinned} \"$@\"; }}\n" for tool in ("ssh", "scp", "sftp")
    )
    env = {**gateway.ssh_env(alice), "HOME": str(home), "GW": "127.0.0.1",
           "PORT": str(gateway.port)}  # fmt: skip
    env["PG_TOTP_CODE"] = pyotp.TOTP(alice.totp_secret).at(time.time() + 30)
    result = subprocess.run(
        ["bash", "-c", wrappers + readme_block("login-once")], cwd=tmp_path, env=env,
        stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "copied-hostname").exists()
    assert "1 login certificate(s) revoked" in result.stderr
    assert len(successes(gateway, "alice", "login-cert")) >= 4  # hostname, scp, sftp, logout
    assert events(gateway, "alice", "login_cert.revoked")[-1]["authority"] == "self-service"

    # The ~/.ssh/config snippet, pointed at this gateway, with a new certificate (issued by
    # the domain service directly: alice's codes of this minute are used up).
    key = home / ".ssh" / "id_ed25519"
    signed = services.login_certificates.issue(
        "alice", key.with_suffix(".pub").read_text(), ttl_seconds=600, source="127.0.0.1",
        bind_source=False, mfa_at=datetime.now(UTC), method="password+totp",
    )  # fmt: skip
    cert_path(key).write_text(signed.certificate + "\n")
    config = tmp_path / "ssh_config"
    config.write_text(
        readme_block("login-ssh-config").replace("2222", str(gateway.port))
        .replace("~/.ssh/id_ed25519", str(key))
    )  # fmt: skip
    common = ["-F", str(config), "-o", f"UserKnownHostsFile={gateway.known_hosts}",
              "-o", "BatchMode=yes", "-o", "IdentitiesOnly=yes"]  # fmt: skip
    for command in (
        ["ssh", *common, "web01", "hostname"],
        ["scp", *common, "web01:/etc/hostname", str(tmp_path / "again")],
        ["rsync", "-e", " ".join(["ssh", *common]), "web01:/etc/hostname", str(tmp_path / "r")],
    ):
        ran = subprocess.run(command, stdin=subprocess.DEVNULL, capture_output=True, timeout=60,
                             env={**os.environ, "HOME": str(home)})  # fmt: skip
        assert ran.returncode == 0, (command[0], ran.stderr)
    assert (tmp_path / "again").read_bytes() == (tmp_path / "r").read_bytes()
