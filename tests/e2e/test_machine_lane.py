"""The machine lane end to end: stock ssh with certificates from pamgate and from ssh-keygen.

Every case drives the real OpenSSH client against the gateway's machine
lane, relaying to a real sshd target, and checks the machine audit trail.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import subprocess
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import asyncssh
import pytest

from gateway.config import load_config
from gateway.crypto.certificates import parse_certificate_line
from gateway.domain.audit.trail import AuditRecord, Trail
from gateway.domain.machines.registry import ScopeTarget
from gateway.services import GatewayServices
from tests.support.docs import page
from tests.support.gateway import Gateway, launch_gateway
from tests.support.machines import Workload, issue, keypair, machine_ssh_command, register

pytestmark = pytest.mark.openssh


def keygen_sign(gateway: Gateway, workload: Workload, *args: str, ca: Path | None = None) -> Path:
    """Sign the workload's key with the stock ssh-keygen (machine CA key unless ``ca``)."""
    ca_key = ca or gateway.data_dir / "keys" / "machine_ca"
    subprocess.run(
        ["ssh-keygen", "-q", "-s", str(ca_key), "-I", f"keygen-{workload.name}", *args,
         str(workload.key.with_suffix(".pub"))],
        check=True, capture_output=True,
    )  # fmt: skip
    return workload.cert


def machine_ssh(
    gateway: Gateway,
    login: str,
    command: str | None,
    *,
    key: Path | None,
    cert: Path | None = None,
    extra: tuple[str, ...] = (),
    input_bytes: bytes | None = None,
    timeout: float = 30,
) -> subprocess.CompletedProcess[bytes]:
    """The stock ssh client on the machine lane: no config, no agent, only the given key."""
    args = [
        "ssh", *extra, "-F", "/dev/null", "-p", str(gateway.machine_port),
        "-o", f"UserKnownHostsFile={gateway.known_hosts}", "-o", "StrictHostKeyChecking=yes",
        "-o", "IdentityAgent=none", "-o", "IdentitiesOnly=yes", "-o", "BatchMode=yes",
        "-o", "ConnectTimeout=10",
    ]  # fmt: skip
    if key is not None:
        args += ["-i", str(key)]
    if cert is not None:
        args += ["-o", f"CertificateFile={cert}"]
    args.append(f"{login}@127.0.0.1")
    if command is not None:
        args.append(command)
    return subprocess.run(
        args,
        input=input_bytes,
        stdin=None if input_bytes is not None else subprocess.DEVNULL,
        capture_output=True,
        timeout=timeout,
    )


def run(gateway: Gateway, workload: Workload, command: str | None, **kw: object):  # noqa: ANN201
    login = str(kw.pop("login", f"{workload.name}:web01"))
    return machine_ssh(gateway, login, command, key=workload.key, cert=workload.cert, **kw)  # type: ignore[arg-type]


def machine_events(
    gateway: Gateway, actor: str, action: str | None = None, timeout: float = 5, want: int = 1
) -> list[AuditRecord]:
    """The machine-trail events of ``actor`` (waiting up to ``timeout`` for ``want`` of them)."""
    deadline = time.monotonic() + timeout
    while True:
        found = [
            e
            for e in gateway.audit.events(Trail.MACHINE)
            if e.actor == actor and (action is None or e.action == action)
        ]
        if len(found) >= want or time.monotonic() > deadline:
            return found
        time.sleep(0.05)


def refusal_reason(gateway: Gateway, actor: str, nth: int = 1) -> str:
    """The reason of the ``nth`` refused login of ``actor`` (waiting for it)."""
    events = machine_events(gateway, actor, "auth.refused", want=nth)
    assert len(events) >= nth, f"no auth.refused event #{nth} for {actor}"
    return events[nth - 1].reason


def human_trail_mentions(gateway: Gateway, text: str) -> bool:
    return any(
        text in (e.actor + (e.target or "") + e.details) for e in gateway.audit.events(Trail.HUMAN)
    )


# -- the allowed path ----------------------------------------------------------


def test_pamgate_issued_certificate_runs_allowed_command(
    gateway: Gateway, services: GatewayServices, tmp_path: Path
) -> None:
    workload = register(services, tmp_path)
    serial = issue(services, workload)
    result = run(gateway, workload, "echo machine-ok")
    assert result.returncode == 0, result.stderr
    assert result.stdout == b"machine-ok\n"
    # The NHI's only target can be left out of the login name.
    by_name = run(gateway, workload, "cat /etc/hostname", login=workload.name)
    assert by_name.returncode == 0, by_name.stderr
    actions = [e.action for e in machine_events(gateway, workload.name, want=8)]
    assert actions.count("auth.accepted") == 2
    assert actions.count("command.allowed") == 2
    assert actions.count("session.start") == 2
    assert "session.end" in actions
    start = machine_events(gateway, workload.name, "session.start")[0]
    assert start.authority == f"nhi:{workload.name};serial={serial}"
    assert (start.target, start.account) == ("web01", "root")
    end = machine_events(gateway, workload.name, "session.end", want=2)[0]
    details = json.loads(end.details)
    assert details["exit_status"] == 0
    assert details["stdout_bytes"] == len(b"machine-ok\n")
    assert details["stdout_sha256"]
    assert details["recording_sha256"]
    assert not human_trail_mentions(gateway, workload.name)
    assert services.machines.get(workload.name).last_used_at is not None


def test_keygen_signed_certificate_is_accepted(
    gateway: Gateway, services: GatewayServices, tmp_path: Path
) -> None:
    workload = register(services, tmp_path)
    keygen_sign(gateway, workload, "-n", workload.name, "-V", "-1m:+5m", "-z", "990001")
    result = run(gateway, workload, "echo machine-ok")
    assert result.returncode == 0, result.stderr
    assert result.stdout == b"machine-ok\n"


def test_unknown_extension_is_ignored(
    gateway: Gateway, services: GatewayServices, tmp_path: Path
) -> None:
    workload = register(services, tmp_path)
    keygen_sign(gateway, workload, "-n", workload.name, "-V", "-1m:+5m", "-O", "extension:odd@x=1")
    assert run(gateway, workload, "echo machine-ok").returncode == 0


# -- certificates refused --------------------------------------------------------

REFUSALS = {
    "expired": (("-V", "20200101:20200102"), "has expired"),
    "not-yet-valid": (("-V", "+1h:+2h"), "not valid yet"),
    "too-long": (("-V", "-1m:+1h"), "exceeds"),
    "critical-option": (("-V", "-1m:+5m", "-O", "critical:weird@x=1"), "unknown critical option"),
    "source-mismatch": (("-V", "-1m:+5m", "-O", "source-address=10.9.0.0/16"), "outside"),
}


@pytest.mark.parametrize("case", sorted(REFUSALS))
def test_bad_certificates_are_refused_with_reason(
    gateway: Gateway, services: GatewayServices, tmp_path: Path, case: str
) -> None:
    workload = register(services, tmp_path)
    args, reason = REFUSALS[case]
    keygen_sign(gateway, workload, "-n", workload.name, *args)
    result = run(gateway, workload, "echo machine-ok")
    assert result.returncode == 255
    assert b"Permission denied (publickey)" in result.stderr
    assert reason in refusal_reason(gateway, workload.name)


def test_host_certificate_cannot_log_in(
    gateway: Gateway, services: GatewayServices, tmp_path: Path
) -> None:
    # The stock client will not even offer a host certificate as a user
    # identity; the gate's own refusal is covered in test_machine_admission.
    workload = register(services, tmp_path)
    keygen_sign(gateway, workload, "-h", "-n", workload.name, "-V", "-1m:+5m")
    result = run(gateway, workload, "echo machine-ok")
    assert result.returncode == 255
    assert b"Permission denied (publickey)" in result.stderr
    assert not machine_events(gateway, workload.name, "auth.accepted", timeout=0)


def test_source_address_match_is_accepted(
    gateway: Gateway, services: GatewayServices, tmp_path: Path
) -> None:
    workload = register(services, tmp_path)
    keygen_sign(gateway, workload, "-n", workload.name, "-V", "-1m:+5m",
                "-O", "source-address=127.0.0.0/8")  # fmt: skip
    assert run(gateway, workload, "echo machine-ok").returncode == 0


def test_nhi_source_networks_are_enforced(
    gateway: Gateway, services: GatewayServices, tmp_path: Path
) -> None:
    workload = register(services, tmp_path, sources=("192.0.2.0/24",))
    issue(services, workload)  # pamgate copies the networks into source-address
    assert run(gateway, workload, "echo machine-ok").returncode == 255
    assert "outside the certificate's networks" in refusal_reason(gateway, workload.name)
    # A certificate without source-address is still held to the NHI's networks.
    keygen_sign(gateway, workload, "-n", workload.name, "-V", "-1m:+5m")
    assert run(gateway, workload, "echo machine-ok").returncode == 255
    assert "allowed networks" in refusal_reason(gateway, workload.name, nth=2)


def test_wrong_ca_empty_principals_and_strangers_are_refused(
    gateway: Gateway, services: GatewayServices, tmp_path: Path
) -> None:
    rogue_ca = keypair(tmp_path, "rogue_ca")
    wrong_ca = register(services, tmp_path)
    keygen_sign(gateway, wrong_ca, "-n", wrong_ca.name, "-V", "-1m:+5m", ca=rogue_ca)
    no_principals = register(services, tmp_path)
    keygen_sign(gateway, no_principals, "-V", "-1m:+5m")
    stranger = Workload("not-an-nhi", keypair(tmp_path, "stranger"))
    keygen_sign(gateway, stranger, "-n", "not-an-nhi", "-V", "-1m:+5m")
    for workload, reason in (
        (wrong_ca, "not signed by the machine CA"),
        (no_principals, "no principals"),
        (stranger, "not a registered machine identity"),
    ):
        result = run(gateway, workload, "echo machine-ok")
        assert result.returncode == 255, workload
        assert reason in refusal_reason(gateway, workload.name)


def test_suspended_and_offboarded_identities_are_refused(
    gateway: Gateway, services: GatewayServices, tmp_path: Path
) -> None:
    workload = register(services, tmp_path)
    issue(services, workload)
    services.machines.set_status(workload.name, "suspended", actor="tests")
    assert run(gateway, workload, "echo machine-ok").returncode == 255
    assert "is suspended" in refusal_reason(gateway, workload.name)
    services.machines.set_status(workload.name, "active", actor="tests")
    assert run(gateway, workload, "echo machine-ok").returncode == 0
    services.machine_revocations.offboard(workload.name, actor="tests")
    assert run(gateway, workload, "echo machine-ok").returncode == 255
    assert "is offboarded" in refusal_reason(gateway, workload.name, nth=2)


def test_passwords_and_plain_keys_are_refused(
    gateway: Gateway, services: GatewayServices, tmp_path: Path
) -> None:
    workload = register(services, tmp_path)
    plain = machine_ssh(gateway, workload.name, "echo machine-ok", key=workload.key)
    assert plain.returncode == 255
    assert b"Permission denied (publickey)" in plain.stderr
    assert "plain keys are not accepted" in refusal_reason(gateway, workload.name)
    password = machine_ssh(
        gateway, workload.name, "true", key=None,
        extra=("-o", "PreferredAuthentications=password,keyboard-interactive"),
    )  # fmt: skip
    assert password.returncode == 255
    assert b"Permission denied (publickey)" in password.stderr


# -- scope -------------------------------------------------------------------------


def test_command_outside_scope_is_refused_and_audited(
    gateway: Gateway, services: GatewayServices, tmp_path: Path
) -> None:
    workload = register(services, tmp_path)
    issue(services, workload)
    result = run(gateway, workload, "id")
    assert result.returncode != 0
    assert b"command not in" in result.stderr
    refused = machine_events(gateway, workload.name, "command.refused")
    assert refused and json.loads(refused[0].details)["command"] == "id"
    wrong_account = run(gateway, workload, "echo machine-ok", login=f"{workload.name}:nobody@web01")
    assert wrong_account.returncode != 0
    assert b"not in" in wrong_account.stderr
    assert not machine_events(gateway, workload.name, "session.start", timeout=0)


def test_force_command_is_enforced(
    gateway: Gateway, services: GatewayServices, tmp_path: Path
) -> None:
    workload = register(services, tmp_path)
    keygen_sign(gateway, workload, "-n", workload.name, "-V", "-1m:+5m",
                "-O", "force-command=echo machine-ok")  # fmt: skip
    forced = run(gateway, workload, None)
    assert forced.returncode == 0, forced.stderr
    assert forced.stdout == b"machine-ok\n"
    same = run(gateway, workload, "echo machine-ok")
    assert same.returncode == 0 and same.stdout == b"machine-ok\n"
    # Stricter than sshd (which would run the forced command): another command is refused.
    other = run(gateway, workload, "cat /etc/hostname")
    assert other.returncode != 0
    assert b"may only run: echo machine-ok" in other.stderr
    assert other.stdout == b""
    # A forced command outside the NHI's scope is refused too.
    keygen_sign(gateway, workload, "-n", workload.name, "-V", "-1m:+5m",
                "-O", "force-command=id")  # fmt: skip
    assert run(gateway, workload, None).returncode != 0


def test_pty_is_refused_unless_allowed(
    gateway: Gateway, services: GatewayServices, tmp_path: Path
) -> None:
    workload = register(services, tmp_path)
    issue(services, workload)
    result = run(gateway, workload, "echo machine-ok", extra=("-tt",))
    assert result.returncode != 0
    assert b"PTY allocation request failed" in result.stderr
    refused = machine_events(gateway, workload.name, "channel.refused")
    assert refused and json.loads(refused[0].details)["kind"] == "pty"
    # A certificate that permits a pty does not help if the NHI's scope does not.
    keygen_sign(gateway, workload, "-n", workload.name, "-V", "-1m:+5m")
    result = run(gateway, workload, "echo machine-ok", extra=("-tt",))
    assert result.returncode != 0
    assert b"a terminal (pty) is not allowed" in result.stderr
    assert machine_events(gateway, workload.name, "command.refused")
    allowed = register(services, tmp_path, allow_pty=True)
    issue(services, allowed)
    with_pty = run(gateway, allowed, "echo machine-ok", extra=("-tt",))
    assert with_pty.returncode == 0, with_pty.stderr
    assert b"machine-ok" in with_pty.stdout


def test_forwarding_and_sftp_are_refused(
    gateway: Gateway, services: GatewayServices, tmp_path: Path
) -> None:
    workload = register(services, tmp_path)
    issue(services, workload)
    web01 = gateway.targets["web01"]
    local = run(gateway, workload, None, extra=("-W", f"127.0.0.1:{web01.port}"))
    assert local.returncode == 255
    assert b"administratively prohibited" in local.stderr
    remote = run(gateway, workload, "echo machine-ok",
                 extra=("-o", "ExitOnForwardFailure=yes", "-R", "0:127.0.0.1:9"))  # fmt: skip
    assert remote.returncode == 255
    sftp = run(gateway, workload, "sftp", extra=("-s",))
    assert sftp.returncode != 0
    kinds = set()
    for event in machine_events(gateway, workload.name, "channel.refused", want=3):
        kinds.add(json.loads(event.details)["kind"])
    assert {"port-forwarding", "subsystem"} <= kinds


def test_sftp_works_only_when_the_scope_allows_it(
    gateway: Gateway, services: GatewayServices, tmp_path: Path
) -> None:
    workload = register(services, tmp_path, allow_sftp=True)
    issue(services, workload)
    batch = tmp_path / "batch"
    batch.write_text(f"get /etc/hostname {tmp_path / 'copied'}\n")
    result = subprocess.run(
        ["sftp", "-F", "/dev/null", "-P", str(gateway.machine_port), "-b", str(batch),
         "-o", f"UserKnownHostsFile={gateway.known_hosts}", "-o", "IdentitiesOnly=yes",
         "-o", "BatchMode=yes", "-i", str(workload.key), "-o", f"CertificateFile={workload.cert}",
         # sftp would read NAME:TARGET@host as a host and a path; -o User keeps them apart.
         "-o", f"User={workload.name}:web01", "127.0.0.1"],
        capture_output=True, timeout=30, stdin=subprocess.DEVNULL,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "copied").read_text() == Path("/etc/hostname").read_text()
    allowed = machine_events(gateway, workload.name, "command.allowed")
    assert allowed and json.loads(allowed[0].details)["command"] == "subsystem:sftp"


# -- revocation ----------------------------------------------------------------------


def test_revocation_by_serial_key_id_and_key(
    gateway: Gateway, services: GatewayServices, tmp_path: Path
) -> None:
    revocations = services.machine_revocations
    by_serial = register(services, tmp_path)
    serial = issue(services, by_serial)
    assert run(gateway, by_serial, "echo machine-ok").returncode == 0
    revocations.revoke(actor="tests", serial=serial)
    assert run(gateway, by_serial, "echo machine-ok").returncode == 255
    assert f"serial {serial}" in refusal_reason(gateway, by_serial.name)

    by_key_id = register(services, tmp_path)
    keygen_sign(gateway, by_key_id, "-n", by_key_id.name, "-V", "-1m:+5m")
    revocations.revoke(actor="tests", key_id=f"keygen-{by_key_id.name}")
    assert run(gateway, by_key_id, "echo machine-ok").returncode == 255
    assert "key id" in refusal_reason(gateway, by_key_id.name)

    by_key = register(services, tmp_path)
    issue(services, by_key)
    revocations.revoke(actor="tests", key_line=by_key.key.with_suffix(".pub").read_text())
    assert run(gateway, by_key, "echo machine-ok").returncode == 255
    assert "revoked (key" in refusal_reason(gateway, by_key.name)

    # The KRL says the same as the gateway, for all three.
    krl = tmp_path / "revoked.krl"
    result = gateway.cli("machine", "krl", "-o", str(krl))
    assert result.returncode == 0, result.stderr
    for workload in (by_serial, by_key_id, by_key):
        check = subprocess.run(["ssh-keygen", "-Q", "-f", str(krl), str(workload.cert)],
                               capture_output=True, text=True)  # fmt: skip
        assert "REVOKED" in check.stdout, check.stdout
    fresh = register(services, tmp_path)
    issue(services, fresh)
    check = subprocess.run(["ssh-keygen", "-Q", "-f", str(krl), str(fresh.cert)],
                           capture_output=True, text=True)  # fmt: skip
    assert check.returncode == 0 and "ok" in check.stdout


def test_offboarding_ends_a_live_session_within_two_seconds(
    gateway: Gateway, services: GatewayServices, tmp_path: Path
) -> None:
    workload = register(services, tmp_path, commands=("sleep 30",))
    issue(services, workload)
    args = ["ssh", "-F", "/dev/null", "-p", str(gateway.machine_port),
            "-o", f"UserKnownHostsFile={gateway.known_hosts}", "-o", "IdentitiesOnly=yes",
            "-o", "BatchMode=yes", "-i", str(workload.key),
            "-o", f"CertificateFile={workload.cert}", f"{workload.name}:web01@127.0.0.1",
            "sleep 30"]  # fmt: skip
    live = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)  # fmt: skip
    try:
        assert machine_events(gateway, workload.name, "session.start", timeout=10)
        started = time.monotonic()
        revoked = services.machine_revocations.offboard(workload.name, actor="tests")
        assert len(revoked) == 1
        _, stderr = live.communicate(timeout=10)
        assert time.monotonic() - started <= 2.5
    finally:
        live.kill()
    assert live.returncode == 255
    assert b"offboarded" in stderr
    end = machine_events(gateway, workload.name, "session.end")
    assert end and "offboarded" in end[0].reason


# -- join tokens and renewal ------------------------------------------------------------


def keygen_output(*args: str) -> str:
    return subprocess.run(["ssh-keygen", *args], capture_output=True, text=True, check=True).stdout


def join(gateway: Gateway, key: Path, token: str) -> subprocess.CompletedProcess[bytes]:
    return machine_ssh(gateway, "pamgate-join", None, key=key, input_bytes=token.encode() + b"\n")


def test_join_token_is_single_use_and_binds_the_proven_key(
    gateway: Gateway, services: GatewayServices, tmp_path: Path
) -> None:
    workload = register(services, tmp_path)
    token = gateway.cli("machine", "token", workload.name, "--ttl", "5m")
    assert token.returncode == 0, token.stderr
    secret = token.stdout.strip()
    joined = join(gateway, workload.key, secret)
    assert joined.returncode == 0, joined.stderr
    workload.cert.write_bytes(joined.stdout)
    listing = keygen_output("-L", "-f", str(workload.cert))
    fingerprint = keygen_output("-l", "-f", str(workload.key)).split()[1]
    assert fingerprint in listing  # the certificate is on the key that logged in
    assert run(gateway, workload, "echo machine-ok").returncode == 0
    again = join(gateway, keypair(tmp_path, "second"), secret)
    assert again.returncode == 1
    assert b"used up" in again.stderr
    garbage = join(gateway, keypair(tmp_path, "third"), "pgjoin-1-nonsense")
    assert garbage.returncode == 1
    assert b"not valid" in garbage.stderr
    assert machine_events(gateway, workload.name, "machine.joined")
    refusals = [e.reason for e in gateway.audit.events(Trail.MACHINE)
                if e.action == "machine.join_refused"]  # fmt: skip
    assert any("used up" in reason for reason in refusals)
    trail = "".join(e.details + e.reason for e in gateway.audit.events(Trail.MACHINE))
    assert secret.split("-", 2)[2] not in trail


def test_renewal_advances_the_generation_and_a_copied_certificate_locks_the_nhi(
    gateway: Gateway, services: GatewayServices, tmp_path: Path
) -> None:
    workload = register(services, tmp_path)
    issue(services, workload, ttl=300)
    old_cert = tmp_path / "old-cert.pub"
    old_cert.write_bytes(workload.cert.read_bytes())
    new_key = keypair(tmp_path, f"{workload.name}-next")
    renewed = run(gateway, workload, "pamgate-renew --ttl 4m",
                  input_bytes=new_key.with_suffix(".pub").read_bytes())  # fmt: skip
    assert renewed.returncode == 0, renewed.stderr
    new_cert = new_key.with_name(new_key.name + "-cert.pub")
    new_cert.write_bytes(renewed.stdout)
    listing = keygen_output("-L", "-f", str(new_cert))
    assert "gen=2" in listing
    assert run(gateway, Workload(workload.name, new_key), "echo machine-ok").returncode == 0
    # The same key cannot be renewed onto itself.
    same = run(gateway, Workload(workload.name, new_key), "pamgate-renew",
               input_bytes=new_key.with_suffix(".pub").read_bytes())  # fmt: skip
    assert same.returncode == 1 and b"new key" in same.stderr
    # Someone still using generation 1 holds a copy: refused, and the NHI is locked.
    copied = machine_ssh(gateway, f"{workload.name}:web01", "echo machine-ok",
                         key=workload.key, cert=old_cert)  # fmt: skip
    assert copied.returncode == 255
    assert services.machines.get(workload.name).status == "suspended"
    mismatch = machine_events(gateway, workload.name, "machine.generation_mismatch")
    assert mismatch and json.loads(mismatch[0].details)["current_generation"] == 2
    assert machine_events(gateway, workload.name, "machine.renewed")
    assert run(gateway, Workload(workload.name, new_key), "echo machine-ok").returncode == 255


# -- lanes stay apart -----------------------------------------------------------------------


def test_human_and_machine_lanes_do_not_mix(
    gateway: Gateway, services: GatewayServices, tmp_path: Path
) -> None:
    user = gateway.make_user(key=True)
    assert user.key_path is not None
    human_key = machine_ssh(gateway, f"{user.name}:web01", "true", key=user.key_path)
    assert human_key.returncode == 255
    workload = register(services, tmp_path)
    issue(services, workload)
    command = gateway.ssh_command(f"{workload.name}:web01", key=workload.key,
                                  extra=("-o", f"CertificateFile={workload.cert}",
                                         "-o", "BatchMode=yes"))  # fmt: skip
    machine_on_human = subprocess.run(command + ["echo machine-ok"], capture_output=True,
                                      stdin=subprocess.DEVNULL, timeout=30)  # fmt: skip
    assert machine_on_human.returncode == 255
    assert b"machine-ok" not in machine_on_human.stdout


# -- SHA-1 CA signatures (a gateway whose machine CA is RSA) ----------------------------------


def test_sha1_ca_signatures_are_refused(tmp_path: Path) -> None:
    keys = tmp_path / "data" / "keys"
    keys.mkdir(parents=True, mode=0o700)
    subprocess.run(["ssh-keygen", "-q", "-t", "rsa", "-b", "2048", "-N", "", "-f",
                    str(keys / "machine_ca")], check=True)  # fmt: skip
    with launch_gateway(tmp_path) as own:
        services = GatewayServices.open(load_config(own.config_path))
        try:
            workload = register(services, tmp_path)
            keygen_sign(own, workload, "-t", "ssh-rsa", "-n", workload.name, "-V", "-1m:+5m")
            result = run(own, workload, "echo machine-ok")
            assert result.returncode == 255
            assert "SHA-1" in refusal_reason(own, workload.name)
            keygen_sign(own, workload, "-t", "rsa-sha2-512", "-n", workload.name, "-V", "-1m:+5m")
            assert run(own, workload, "echo machine-ok").returncode == 0
        finally:
            services.close()


# -- protocol-level attacks (asyncssh as a hostile client) ------------------------------------


def _offer_certificate_only(key_path: Path, certificate_line: str) -> asyncssh.SSHKeyPair:
    """A key pair that offers someone's public certificate; its signatures are our own key's."""
    pair = asyncssh.load_keypairs([asyncssh.read_private_key(key_path)])[0]
    algorithm, blob = certificate_line.split()[:2]
    pair.algorithm, pair.public_data = algorithm.encode(), base64.b64decode(blob)
    return pair


class _SwitchingClient(asyncssh.SSHClient):
    """Offers the victim's certificate as the victim, then switches to pamgate-join."""

    def __init__(self, offers: list[asyncssh.SSHKeyPair], switch_to: str | None) -> None:
        self._offers, self._switch_to = offers, switch_to
        self._conn: asyncssh.SSHClientConnection | None = None

    def connection_made(self, conn: asyncssh.SSHClientConnection) -> None:
        self._conn = conn

    def public_key_auth_requested(self) -> asyncssh.SSHKeyPair | None:
        if not self._offers:
            return None
        offer = self._offers.pop(0)
        if not self._offers and self._switch_to and self._conn is not None:
            self._conn._username = self._switch_to  # SSH lets a client change user mid-auth
        return offer


async def _attempt(gateway: Gateway, login: str, client: _SwitchingClient, command: str):  # noqa: ANN202
    try:
        conn, _ = await asyncssh.create_connection(
            lambda: client, "127.0.0.1", gateway.machine_port, username=login,
            known_hosts=str(gateway.known_hosts), client_keys=None, agent_path=None,
            preferred_auth="publickey", config=None,
        )  # fmt: skip
    except (asyncssh.Error, OSError, ValueError) as exc:
        return exc
    async with conn:
        return await conn.run(command, check=False, input="", timeout=20)


def test_a_public_certificate_and_a_switched_user_name_get_nowhere(
    gateway: Gateway, services: GatewayServices, tmp_path: Path
) -> None:
    victim = register(services, tmp_path, commands=("id",))
    issue(services, victim)
    attacker_key = keypair(tmp_path, "attacker")
    fake = _offer_certificate_only(attacker_key, victim.cert.read_text())
    mine = asyncssh.load_keypairs([asyncssh.read_private_key(attacker_key)])[0]
    result = asyncio.run(_attempt(
        gateway, victim.name, _SwitchingClient([fake, mine], "pamgate-join"), "id"
    ))  # fmt: skip
    if isinstance(result, asyncssh.SSHCompletedProcess):
        assert result.exit_status != 0
        assert "uid=" not in str(result.stdout)
    assert not machine_events(gateway, victim.name, "auth.accepted", timeout=1)
    assert not machine_events(gateway, victim.name, "session.start", timeout=0)


def test_a_leaked_old_generation_certificate_cannot_lock_the_nhi(
    gateway: Gateway, services: GatewayServices, tmp_path: Path
) -> None:
    workload = register(services, tmp_path)
    issue(services, workload)
    old_line = workload.cert.read_text()
    new_key = keypair(tmp_path, "renewed")
    services.machine_credentials.renew(
        workload.name, parse_certificate_line(old_line), new_key.with_suffix(".pub").read_text(),
        ttl_seconds=None, source="127.0.0.1",
    )  # fmt: skip
    # Someone who only has the old *public* certificate offers it and cannot sign.
    fake = _offer_certificate_only(keypair(tmp_path, "thief"), old_line)
    result = asyncio.run(_attempt(
        gateway, f"{workload.name}:web01", _SwitchingClient([fake], None), "echo machine-ok"
    ))  # fmt: skip
    assert not isinstance(result, asyncssh.SSHCompletedProcess)
    assert services.machines.get(workload.name).status == "active"
    assert not machine_events(gateway, workload.name, "machine.generation_mismatch", timeout=1)


def test_revocation_and_suspension_apply_to_new_sessions_on_an_open_connection(
    gateway: Gateway, services: GatewayServices, tmp_path: Path
) -> None:
    workload = register(services, tmp_path)
    serial = issue(services, workload)

    async def scenario() -> list[asyncssh.SSHCompletedProcess]:
        key = asyncssh.read_private_key(workload.key)
        cert = asyncssh.read_certificate(workload.cert)
        async with asyncssh.connect(
            "127.0.0.1", gateway.machine_port, username=f"{workload.name}:web01",
            known_hosts=str(gateway.known_hosts), client_keys=[(key, cert)], agent_path=None,
            config=None,
        ) as conn:  # fmt: skip
            results = [await conn.run("echo machine-ok", check=False)]
            await asyncio.to_thread(
                services.machine_revocations.revoke, actor="tests", serial=serial
            )
            results.append(await conn.run("echo machine-ok", check=False))
            return results

    before, after = asyncio.run(scenario())
    assert before.exit_status == 0 and before.stdout == "machine-ok\n"
    assert after.exit_status != 0
    assert "revoked" in str(after.stderr)


# -- the documented CI lifecycle (docs/concepts/machines.md), verbatim -----------------------


def readme_lifecycle_script() -> str:
    readme = page("concepts/machines.md")
    block = readme.split("<!-- machine-lifecycle -->")[1].split("<!-- /machine-lifecycle -->")[0]
    return block.split("```sh\n", 1)[1].rsplit("```", 1)[0]


def test_readme_lifecycle_script_runs_with_stock_openssh(gateway: Gateway, tmp_path: Path) -> None:
    added = gateway.cli("machine", "add", "svc-report", "--kind", "ci-pipeline",
                        "--owner", "Data team", "--tech-owner", "ops@example.net",
                        "--purpose", "nightly report", "--target", "web01",
                        "--command", "uptime")  # fmt: skip
    assert added.returncode == 0, added.stderr
    token = gateway.cli("machine", "token", "svc-report", "--ttl", "10m")
    known_hosts = gateway.cli("machine", "known-hosts")
    assert token.returncode == 0 and known_hosts.returncode == 0, token.stderr + known_hosts.stderr
    (tmp_path / "machine_known_hosts").write_text(known_hosts.stdout)
    assert known_hosts.stdout.startswith(f"[127.0.0.1]:{gateway.machine_port} ssh-ed25519 ")
    pinned = tmp_path / "machine_known_hosts"
    env = {**os.environ, "GW": "127.0.0.1", "PORT": str(gateway.machine_port),
           "JOIN_TOKEN": token.stdout.strip(), "KNOWN_HOSTS": str(pinned)}  # fmt: skip
    result = subprocess.run(["bash", "-c", readme_lifecycle_script()], cwd=tmp_path, env=env,
                            capture_output=True, text=True, timeout=120)  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert result.stdout.count("load average") == 2  # uptime, before and after the renewal
    assert "may only run: uptime" in result.stderr  # its one command is forced
    # 6. Offboarded: cut off.
    assert gateway.cli("machine", "offboard", "svc-report").returncode == 0
    after = machine_ssh(gateway, "svc-report:web01", "uptime", key=tmp_path / "job_key",
                        extra=("-o", f"UserKnownHostsFile={pinned}"))  # fmt: skip
    assert after.returncode == 255
    assert machine_events(gateway, "svc-report", "auth.refused")  # written as the client leaves
    actions = {e.action for e in gateway.audit.events(Trail.MACHINE) if e.target == "nhi:svc-report"
               or e.actor == "svc-report"}  # fmt: skip
    assert {"machine.created", "machine.token_created", "machine.joined", "auth.accepted",
            "command.allowed", "session.start", "session.end", "command.refused",
            "machine.renewed", "machine.offboarded", "machine.revoked",
            "auth.refused"} <= actions  # fmt: skip
    assert not human_trail_mentions(gateway, "svc-report")


def test_every_multiplexed_command_gets_its_exit_status(
    gateway: Gateway, services: GatewayServices, tmp_path: Path
) -> None:
    """Ansible's way: one ControlMaster connection, many commands, each exit status exact."""
    workload = register(services, tmp_path, commands=("re:exit [0-9]",))
    issue(services, workload)
    mux = ("-o", f"ControlPath={tmp_path / 'mux'}", "-o", "ControlMaster=auto",
           "-o", "ControlPersist=60")  # fmt: skip
    try:
        assert run(gateway, workload, "exit 0", extra=mux).returncode == 0  # starts the master

        def one(index: int) -> int:
            return run(gateway, workload, f"exit {index % 7}", extra=mux).returncode

        with ThreadPoolExecutor(8) as pool:
            codes = list(pool.map(one, range(50)))
    finally:
        subprocess.run(["ssh", "-o", f"ControlPath={tmp_path / 'mux'}", "-O", "exit", "x"],
                       capture_output=True, timeout=10)  # fmt: skip
    assert codes == [index % 7 for index in range(50)]
    ends = machine_events(gateway, workload.name, "session.end", want=51, timeout=30)
    statuses = Counter(json.loads(end.details)["exit_status"] for end in ends)
    assert statuses == Counter([0] + [index % 7 for index in range(50)])


def test_narrowing_a_scope_ends_live_sessions_outside_it_and_binds_an_open_connection(
    gateway: Gateway, services: GatewayServices, tmp_path: Path
) -> None:
    """A review narrows an NHI while it is connected: what it runs outside the new scope ends,
    and its open (multiplexed) connection gets only what the new scope allows."""
    workload = register(services, tmp_path, commands=("echo machine-ok", "re:sleep [0-9]+"))
    issue(services, workload)
    mux = ("-o", f"ControlPath={tmp_path / 'mux'}", "-o", "ControlMaster=auto",
           "-o", "ControlPersist=60")  # fmt: skip
    sleeper = None
    try:
        assert run(gateway, workload, "echo machine-ok", extra=mux).returncode == 0
        sleeper = subprocess.Popen(
            machine_ssh_command(gateway, f"{workload.name}:web01", "sleep 60",
                                key=workload.key, cert=workload.cert, options=mux),
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        )  # fmt: skip
        assert len(machine_events(gateway, workload.name, "session.start", want=2, timeout=20)) == 2
        services.machines.narrow_scope(
            workload.name, actor="tests", targets=[ScopeTarget("web01", "root")],
            commands=["echo machine-ok"], sources=[], allow_pty=False, allow_sftp=False,
            reason="sleep is never needed",
        )  # fmt: skip
        narrowed_at = time.monotonic()
        _, stderr = sleeper.communicate(timeout=20)
        ended_after = time.monotonic() - narrowed_at
        assert sleeper.returncode == 255
        assert b"'sleep 60' was removed from" in stderr
        # The same connection: the removed command is refused, the kept one runs.
        refused = run(gateway, workload, "sleep 1", extra=mux)
        assert refused.returncode != 0
        assert b"not in" in refused.stderr and b"scope" in refused.stderr
        assert run(gateway, workload, "echo machine-ok", extra=mux).returncode == 0
    finally:
        if sleeper is not None and sleeper.poll() is None:
            sleeper.kill()
        subprocess.run(["ssh", "-o", f"ControlPath={tmp_path / 'mux'}", "-O", "exit", "x"],
                       capture_output=True, timeout=10)  # fmt: skip
    ends = machine_events(gateway, workload.name, "session.end", want=3, timeout=10)
    [cut] = [e for e in ends if json.loads(e.details).get("command") == "sleep 60"]
    assert cut.reason.startswith(f"the command 'sleep 60' was removed from {workload.name}'s scope")
    refusals = machine_events(gateway, workload.name, "command.refused")
    assert any("sleep 1" in json.loads(e.details)["command"] for e in refusals)
    print(f"narrowed scope took effect on the live session in {ended_after:.1f} s")
