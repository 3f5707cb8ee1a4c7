"""Issue 18, point by point, on the shared gateway: what a hostile workload or signer tries.

Each test drives the stock OpenSSH client (or, where it would not misbehave,
a raw asyncssh client) against the real lanes and checks the refusal and the
audited reason. The same certificates against a real sshd are in
test_sshd_conformance.py.
"""

from __future__ import annotations

import json
import re
import subprocess
import time
from pathlib import Path

import pytest

from gateway.domain.audit.trail import Trail
from gateway.services import GatewayServices
from tests.support.certificates import Crafted, crafted_certificate, keygen_sign, raw_login, string
from tests.support.gateway import Gateway
from tests.support.machines import (
    Workload,
    issue,
    keypair,
    machine_ssh,
    register,
    trail_events,
)

pytestmark = pytest.mark.openssh

CERT = "-cert-v01@openssh.com"


def machine_ca(gateway: Gateway) -> Path:
    return gateway.data_dir / "keys" / "machine_ca"


def sign(gateway: Gateway, workload: Workload, *args: str) -> Path:
    """A certificate for the workload's key from ssh-keygen and the machine CA (5 minutes)."""
    return keygen_sign(machine_ca(gateway), workload.key, "-n", workload.name, "-V", "-1m:+5m",
                       *args, key_id=f"keygen-{workload.name}")  # fmt: skip


def write_crafted(gateway: Gateway, workload: Workload, spec: Crafted) -> Path:
    workload.cert.write_text(crafted_certificate(machine_ca(gateway), workload.key, spec) + "\n")
    return workload.cert


def login(gateway: Gateway, workload: Workload, *options: str):  # noqa: ANN201
    return machine_ssh(gateway, workload.name, "echo machine-ok", key=workload.key,
                       cert=workload.cert, options=options)  # fmt: skip


def refused_because(gateway: Gateway, actor: str, nth: int = 1) -> str:
    events = trail_events(gateway, Trail.MACHINE, actor, "auth.refused", want=nth)
    assert len(events) >= nth, f"no auth.refused event #{nth} for {actor}"
    return events[nth - 1].reason


def server_sig_algs(gateway: Gateway, port: int, key: Path) -> list[str]:
    """What a lane advertises in server-sig-algs, as the stock client reports it (ssh -v)."""
    result = machine_ssh(gateway, "nobody", "true", key=key, port=port, options=("-v",))
    found = re.search(rb"server-sig-algs=<([^>]*)>", result.stderr)
    assert found, result.stderr.decode(errors="replace")
    return found.group(1).decode().split(",")


# -- options: repeated, corrupt, misread -----------------------------------------------------


def test_repeated_source_address_and_force_command_are_refused(
    gateway: Gateway, services: GatewayServices, tmp_path: Path
) -> None:
    # The issue's certificate: the second source-address (127.0.0.1) would let it in.
    sources = register(services, tmp_path)
    sign(gateway, sources, "-O", "source-address=10.0.0.0/8",
         "-O", "critical:source-address=127.0.0.1/32")  # fmt: skip
    result = login(gateway, sources)
    assert result.returncode == 255 and b"machine-ok" not in result.stdout
    assert "more than one source-address" in refused_because(gateway, sources.name)
    commands = register(services, tmp_path, commands=("echo machine-ok", "id"))
    sign(gateway, commands, "-O", "force-command=echo machine-ok",
         "-O", "critical:force-command=id")  # fmt: skip
    result = machine_ssh(gateway, commands.name, None, key=commands.key, cert=commands.cert)
    assert result.returncode == 255 and b"uid=" not in result.stdout
    assert "more than one force-command" in refused_because(gateway, commands.name)


def test_refusals_name_the_real_cause_not_the_plain_key_tried_after(
    gateway: Gateway, services: GatewayServices, tmp_path: Path
) -> None:
    # The gate once passed these and asyncssh refused them; the stock client then offered
    # the plain key, and the trail said "plain keys are not accepted".
    for critical, extensions, cause in (
        ([("source-address", string("127.0.0.1/8"))], [], "host bits set"),
        ([], [("permit-pty", b"junk")], "permit-pty option is corrupt"),
        ([("force-command", string("echo machine-ok") + b"!")], [], "extra data"),
    ):
        workload = register(services, tmp_path)
        write_crafted(gateway, workload, Crafted(principals=[workload.name], critical=critical,
                                                 extensions=extensions))  # fmt: skip
        assert login(gateway, workload).returncode == 255
        event = trail_events(gateway, Trail.MACHINE, workload.name, "auth.refused")[0]
        assert cause in event.reason
        attempts = json.loads(event.details)["attempts"]
        assert {"publickey-certificate", "publickey"} <= {a["method"] for a in attempts}


def test_the_backdating_allowance_never_extends_the_end(
    gateway: Gateway, services: GatewayServices, tmp_path: Path
) -> None:
    workload = register(services, tmp_path)  # the default maximum: 15 minutes
    write_crafted(gateway, workload, Crafted(principals=[workload.name], valid_after=0,
                                             valid_before=16 * 60))  # fmt: skip
    assert login(gateway, workload).returncode == 255
    assert "from now, which exceeds" in refused_because(gateway, workload.name)
    # Backdated by a minute and ending 15 minutes from now: what pamgate itself issues.
    write_crafted(gateway, workload, Crafted(principals=[workload.name], valid_after=-60,
                                             valid_before=15 * 60 - 5))  # fmt: skip
    assert login(gateway, workload).returncode == 0


# -- algorithms: SHA-1 and DSA on both lanes --------------------------------------------------


def test_neither_lane_advertises_sha1_or_dsa(gateway: Gateway, tmp_path: Path) -> None:
    key = keypair(tmp_path, "probe")
    machine = server_sig_algs(gateway, gateway.machine_port, key)
    human = server_sig_algs(gateway, gateway.port, key)
    for advertised in (machine, human):
        assert "ssh-rsa" not in advertised and "ssh-dss" not in advertised
        assert {"ssh-ed25519", "rsa-sha2-256", "rsa-sha2-512"} <= set(advertised)
    assert "sk-ssh-ed25519@openssh.com" in human  # people may use security keys
    assert not any(alg.startswith("sk-") for alg in machine)  # workloads have no finger


def test_sha1_user_signatures_are_refused_on_the_machine_lane(
    gateway: Gateway, services: GatewayServices, tmp_path: Path
) -> None:
    workload = register(services, tmp_path)
    workload.key = keypair(tmp_path, f"{workload.name}-rsa", "rsa")
    issue(services, workload)
    stock = login(gateway, workload, "-o", f"PubkeyAcceptedAlgorithms=ssh-rsa{CERT},ssh-rsa")
    assert stock.returncode == 255 and b"machine-ok" not in stock.stdout
    # A client that signs with SHA-1 whatever the lane advertises, under either name.
    for algorithm in (f"ssh-rsa{CERT}", f"rsa-sha2-256{CERT}"):
        forced = raw_login(gateway.machine_port, workload.name, workload.key,
                           certificate=workload.cert.read_text(), command="echo machine-ok",
                           known_hosts=gateway.known_hosts, algorithm=algorithm.encode(),
                           signature_algorithm=b"ssh-rsa")  # fmt: skip
        assert isinstance(forced, Exception), forced
    reasons = [e.reason for e in trail_events(gateway, Trail.MACHINE, workload.name,
                                              "auth.refused", want=3)]  # fmt: skip
    assert sum("SHA-1" in reason for reason in reasons) >= 2, reasons
    assert login(gateway, workload).returncode == 0  # rsa-sha2-512: fine


def test_dsa_keys_are_refused_on_the_machine_lane(
    gateway: Gateway, services: GatewayServices, tmp_path: Path
) -> None:
    workload = register(services, tmp_path)
    workload.key = keypair(tmp_path, f"{workload.name}-dsa", "dsa")
    sign(gateway, workload)  # ssh-keygen signs it; pamgate itself will not (below)
    result = login(gateway, workload, "-o", f"PubkeyAcceptedAlgorithms=+ssh-dss{CERT},ssh-dss")
    assert result.returncode == 255 and b"machine-ok" not in result.stdout
    assert "ssh-dss (DSA, SHA-1) keys are not accepted" in refused_because(gateway, workload.name)
    issued = gateway.cli("machine", "issue", workload.name, "--pubkey",
                         str(workload.key.with_suffix(".pub")))  # fmt: skip
    assert issued.returncode != 0 and "ssh-dss (DSA, SHA-1) keys are not accepted" in issued.stderr


def test_sha1_signatures_and_dsa_keys_are_refused_on_the_human_lane(
    gateway: Gateway, tmp_path: Path
) -> None:
    rsa, dsa = keypair(tmp_path, "human-rsa", "rsa"), keypair(tmp_path, "human-dsa", "dsa")
    name = f"k{time.monotonic_ns()}"
    gateway.users.add_user(name, actor="tests", groups=("admins",), public_keys=[
        rsa.with_suffix(".pub").read_text(), dsa.with_suffix(".pub").read_text()])  # fmt: skip
    for algorithm in (b"ssh-rsa", b"rsa-sha2-256"):
        # Neither logs in (the raw client has no TOTP to give), but only one passes the key.
        raw_login(gateway.port, name, rsa, certificate=None, command="true",
                  known_hosts=gateway.known_hosts, algorithm=algorithm,
                  signature_algorithm=algorithm)  # fmt: skip
    factors = trail_events(gateway, Trail.HUMAN, name, "auth.factor")
    assert len(factors) == 1  # rsa-sha2-256
    dss = machine_ssh(gateway, name, "true", key=dsa, port=gateway.port,
                      options=("-o", "PubkeyAcceptedAlgorithms=+ssh-dss",
                               "-o", "PreferredAuthentications=publickey"))  # fmt: skip
    assert dss.returncode == 255
    refused = [e.reason for e in trail_events(gateway, Trail.HUMAN, name, "auth.refused", want=2)]
    assert any("ssh-rsa (SHA-1) is refused" in reason for reason in refused), refused
    assert any("ssh-dss (DSA, SHA-1) keys are not accepted" in r for r in refused), refused
    assert len(trail_events(gateway, Trail.HUMAN, name, "auth.factor", timeout=0)) == 1


# -- a machine certificate on the human lane ------------------------------------------------------


def test_a_machine_certificate_on_the_human_lane_is_refused_and_audited(
    gateway: Gateway, services: GatewayServices, tmp_path: Path
) -> None:
    workload = register(services, tmp_path)
    issue(services, workload)
    result = machine_ssh(gateway, f"{workload.name}:web01", "echo machine-ok", key=workload.key,
                         cert=workload.cert, port=gateway.port,
                         options=("-o", "PreferredAuthentications=publickey"))  # fmt: skip
    assert result.returncode == 255 and b"machine-ok" not in result.stdout
    [event] = trail_events(gateway, Trail.HUMAN, workload.name, "auth.refused")
    assert "machine certificate (machine CA) cannot log in on the human lane" in event.reason
    fingerprint = subprocess.run(
        ["ssh-keygen", "-l", "-f", str(workload.cert)], capture_output=True, text=True, check=True
    ).stdout.split()[1]
    assert json.loads(event.details)["key"] == fingerprint


# -- serials --------------------------------------------------------------------------------------


def test_64_bit_serials_log_in_revoke_and_reach_the_krl(
    gateway: Gateway, services: GatewayServices, tmp_path: Path
) -> None:
    workload = register(services, tmp_path)
    serial = 2**64 - 1
    sign(gateway, workload, "-z", str(serial))
    assert login(gateway, workload).returncode == 0
    [accepted] = trail_events(gateway, Trail.MACHINE, workload.name, "auth.accepted")
    assert json.loads(accepted.details)["serial"] == serial
    too_big = gateway.cli("machine", "revoke", "--serial", str(2**64))
    assert too_big.returncode != 0 and "Traceback" not in too_big.stderr
    assert "1 to 18446744073709551615" in too_big.stderr
    revoked = gateway.cli("machine", "revoke", "--serial", str(serial))
    assert revoked.returncode == 0, revoked.stderr
    assert login(gateway, workload).returncode == 255
    assert f"serial {serial}" in refused_because(gateway, workload.name)
    krl = tmp_path / "revoked.krl"
    assert gateway.cli("machine", "krl", "-o", str(krl)).returncode == 0
    check = subprocess.run(["ssh-keygen", "-Q", "-f", str(krl), str(workload.cert)],
                           capture_output=True, text=True)  # fmt: skip
    assert "REVOKED" in check.stdout


def test_serial_zero_cannot_be_revoked_by_serial(gateway: Gateway, tmp_path: Path) -> None:
    result = gateway.cli("machine", "revoke", "--serial", "0")
    assert result.returncode != 0 and "Traceback" not in result.stderr
    assert "serial 0 cannot be revoked by serial" in result.stderr
    assert "--key-id or --key" in result.stderr
    assert not any(e.action == "machine.revoked" and '"0"' in e.details
                   for e in gateway.audit.events(Trail.MACHINE))  # fmt: skip
    written = gateway.cli("machine", "krl", "-o", str(tmp_path / "krl"))
    assert written.returncode == 0, written.stderr


# -- channels ----------------------------------------------------------------------------


def test_a_refused_pty_is_audited_with_its_own_reason(
    gateway: Gateway, services: GatewayServices, tmp_path: Path
) -> None:
    workload = register(services, tmp_path)
    issue(services, workload)  # no --allow-pty: no permit-pty in the certificate
    result = machine_ssh(gateway, workload.name, "echo machine-ok", key=workload.key,
                         cert=workload.cert, options=("-tt",))  # fmt: skip
    assert b"PTY allocation request failed" in result.stderr
    [refused] = trail_events(gateway, Trail.MACHINE, workload.name, "channel.refused")
    assert json.loads(refused.details)["kind"] == "pty"
    assert "does not permit pty" in refused.reason and "forwarding" not in refused.reason
