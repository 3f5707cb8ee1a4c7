"""Real client addresses through a load balancer: the PROXY protocol on the lanes.

A stock ``ssh`` reaches the gateway through a PROXY-speaking relay
(``tests/support/proxy_client.py`` as its ProxyCommand) and through a real
HAProxy with ``send-proxy-v2``; the trail, the policy and the machine lane's
``source-address`` then see the client, not the balancer. A header from an
address that is not a trusted balancer, and a trusted balancer's connection
without one, are refused and audited.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from gateway.devtools.openssh_target import free_port
from gateway.domain.audit.trail import Trail
from tests.support.gateway import Gateway, launch_gateway

pytestmark = pytest.mark.openssh

CLIENT = "203.0.113.7"


def through_relay(gateway: Gateway, version: str, client: str = CLIENT) -> list[str]:
    relay = f"{sys.executable} -m tests.support.proxy_client %h %p {client} {version}"
    return ["-o", f"ProxyCommand={relay}"]


def events(gateway: Gateway, action: str, trail: Trail = Trail.HUMAN) -> list[dict[str, object]]:
    return [
        {"source": r.source, "reason": r.reason, "actor": r.actor, **json.loads(r.details)}
        for r in gateway.audit.events(trail) if r.action == action
    ]  # fmt: skip


def wait_for(check, timeout: float = 10):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not (found := check()):
        assert time.monotonic() < deadline, "never happened"
        time.sleep(0.2)
    return found


@pytest.mark.parametrize("version", ["v1", "v2"])
def test_the_trail_and_policy_see_the_client_behind_the_balancer(
    tmp_path: Path, version: str
) -> None:
    # The test's own ssh connects from 127.0.0.1: that is the trusted balancer here.
    with launch_gateway(
        tmp_path, human_listener='proxy_protocol_from = ["127.0.0.1/32"]'
    ) as gateway:
        user = gateway.make_user()
        result = gateway.run_ssh(user, "web01", "echo via-the-balancer",
                                 extra=tuple(through_relay(gateway, version)))  # fmt: skip
        assert result.returncode == 0, result.stderr
        assert b"via-the-balancer" in result.stdout
        [signed_in] = [e for e in events(gateway, "auth.success") if e["actor"] == user.name]
        assert signed_in["source"] == CLIENT
        starts = [e for e in events(gateway, "session.start") if e["actor"] == user.name]
        assert starts and all(e["source"] == CLIENT for e in starts)
        # A trusted balancer must send the header: a direct ssh from it is refused, audited.
        direct = gateway.run_ssh(gateway.make_user(), "web01", "true")
        assert direct.returncode == 255
        refused = wait_for(lambda: events(gateway, "connection.refused"))
        assert refused[0]["source"] == "127.0.0.1"
        assert "does not start with a PROXY protocol header" in str(refused[0]["reason"])


def test_a_header_from_an_untrusted_address_is_refused(tmp_path: Path) -> None:
    with launch_gateway(
        tmp_path, human_listener='proxy_protocol_from = ["192.0.2.10/32"]'
    ) as gateway:
        user = gateway.make_user()
        spoofed = gateway.run_ssh(user, "web01", "echo must-not-run",
                                  extra=tuple(through_relay(gateway, "v1")))  # fmt: skip
        assert spoofed.returncode == 255 and b"must-not-run" not in spoofed.stdout
        refused = wait_for(lambda: events(gateway, "connection.refused"))
        assert refused[0]["source"] == "127.0.0.1"
        assert "not in proxy_protocol_from" in str(refused[0]["reason"])
        assert not [e for e in events(gateway, "auth.success") if e["actor"] == user.name]
        # Without a header, the same address signs in as itself.
        plain = gateway.run_ssh(user, "web01", "true")
        assert plain.returncode == 0, plain.stderr


def test_a_malformed_header_from_the_balancer_is_refused(tmp_path: Path) -> None:
    with launch_gateway(
        tmp_path, human_listener='proxy_protocol_from = ["127.0.0.1/32"]'
    ) as gateway:
        broken = gateway.run_ssh(gateway.make_user(), "web01", "true",
                                 extra=tuple(through_relay(gateway, "garbage")))  # fmt: skip
        assert broken.returncode == 255
        refused = wait_for(lambda: events(gateway, "connection.refused"))
        assert "malformed PROXY v1" in str(refused[0]["reason"])


HAPROXY_CONFIG = """
global
    maxconn 100
defaults
    mode tcp
    timeout connect 5s
    timeout client 60s
    timeout server 60s
frontend ssh
    bind 127.0.0.1:{front}
    default_backend gateway
backend gateway
    server gw 127.0.0.1:{back} send-proxy-v2
"""


def test_through_a_real_haproxy_the_client_address_reaches_the_trail(tmp_path: Path) -> None:
    haproxy = shutil.which("haproxy") or "/usr/sbin/haproxy"
    assert Path(haproxy).exists(), "haproxy is needed (scripts/setup.sh --test installs it)"
    with launch_gateway(
        tmp_path, human_listener='proxy_protocol_from = ["127.0.0.1/32"]'
    ) as gateway:
        front = free_port()
        config = tmp_path / "haproxy.cfg"
        config.write_text(HAPROXY_CONFIG.format(front=front, back=gateway.port))
        balancer = subprocess.Popen([haproxy, "-db", "-f", str(config)],
                                    stdout=subprocess.PIPE, stderr=subprocess.STDOUT)  # fmt: skip
        try:
            time.sleep(1.0)
            assert balancer.poll() is None, balancer.stdout.read() if balancer.stdout else ""
            user = gateway.make_user()
            # The client binds 127.0.0.2; HAProxy connects to the gateway from 127.0.0.1.
            command = gateway.ssh_command(
                f"{user.name}:web01",
                extra=("-b", "127.0.0.2", "-o", f"HostKeyAlias=[127.0.0.1]:{gateway.port}"),
            )
            command[command.index("-p") + 1] = str(front)
            result = subprocess.run([*command, "echo through-haproxy"],
                                    env=gateway.ssh_env(user), capture_output=True,
                                    timeout=60, stdin=subprocess.DEVNULL)  # fmt: skip
            assert result.returncode == 0, result.stderr
            assert b"through-haproxy" in result.stdout
        finally:
            balancer.terminate()
            balancer.wait(timeout=10)
        [signed_in] = [e for e in events(gateway, "auth.success") if e["actor"] == user.name]
        assert signed_in["source"] == "127.0.0.2"
