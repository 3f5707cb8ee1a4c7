"""Helpers for tests of running nodes: reading a client's output as it comes, the
``/healthz`` answer, another node on the same database, and a node's audit records."""

from __future__ import annotations

import dataclasses
import json
import re
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Mapping
from pathlib import Path
from typing import IO, Any

from gateway.devtools.openssh_target import free_port
from gateway.domain.audit.trail import AuditRecord, Trail
from tests.support.gateway import Gateway, serve


class OutputLines:
    """Reads one stream of a process in a thread, keeping every line."""

    def __init__(self, stream: IO[bytes] | None) -> None:
        assert stream is not None
        self.lines: list[str] = []
        self._changed = threading.Condition()
        self._stream = stream
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        for raw in self._stream:
            with self._changed:
                self.lines.append(raw.decode(errors="replace"))
                self._changed.notify_all()

    def wait_for(self, pattern: str, timeout: float = 20) -> re.Match[str]:
        """The first line matching ``pattern``, once there is one."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                for line in self.lines:
                    found = re.search(pattern, line)
                    if found:
                        return found
                left = deadline - time.monotonic()
                assert left > 0, f"no {pattern!r} in {self.lines}"
                self._changed.wait(left)

    @property
    def text(self) -> str:
        with self._changed:
            return "".join(self.lines)


def scrape(port: int, path: str) -> tuple[int, str]:
    """(HTTP status, body) of ``GET path`` on a node's metrics port."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as reply:
            return reply.status, reply.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()


def sample(text: str, name: str, **labels: str) -> float:
    """The value of one sample in Prometheus' text format (0 when absent)."""
    wanted = ",".join(f'{key}="{value}"' for key, value in sorted(labels.items()))
    for line in text.splitlines():
        found = re.fullmatch(rf"{name}(?:\{{(.*)\}})? (\S+)", line)
        if found and ",".join(sorted((found.group(1) or "").split(","))) == wanted:
            return float(found.group(2))
    return 0.0


def healthz(port: int, *, wait: float = 10.0) -> tuple[int, dict[str, Any]]:
    """(HTTP status, JSON body) of ``GET /healthz`` on a node's metrics port, waiting up to
    ``wait`` seconds for the port to open (a node with relay workers opens it once they
    listen, so a moment after its lanes)."""
    deadline = time.monotonic() + wait
    while True:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=5) as reply:
                return reply.status, json.loads(reply.read())
        except urllib.error.HTTPError as error:
            return error.code, json.loads(error.read())
        except urllib.error.URLError as error:
            if not isinstance(error.reason, ConnectionRefusedError) or (
                time.monotonic() > deadline
            ):
                raise
            time.sleep(0.1)


def add_node(
    first: Gateway, name: str, *, first_name: str, replace: Mapping[str, str] | None = None
) -> Gateway:
    """Start another node: ``first``'s config (node name ``first_name``) with its own ports
    and node name, sharing its database and data directory (so its keys, and host keys a
    load balancer's client finds the same on every node). ``replace``: more text of
    ``first``'s config to change for this node (e.g. its own recordings folder)."""
    port, machine_port = free_port(), free_port()
    text = first.config_path.read_text()
    text = text.replace(f"port = {first.port}\n", f"port = {port}\n")
    text = text.replace(f"port = {first.machine_port}\n", f"port = {machine_port}\n")
    text = text.replace(f'name = "{first_name}"', f'name = "{name}"')
    for old, new in (replace or {}).items():
        text = text.replace(old, new)
    config_path = first.root / f"{name}.toml"
    config_path.write_text(text)
    lines = first.known_hosts.read_text().splitlines()
    for old, new in ((first.port, port), (first.machine_port, machine_port)):
        key = next(line for line in lines if line.startswith(f"[127.0.0.1]:{old} "))
        lines.append(key.replace(f"[127.0.0.1]:{old} ", f"[127.0.0.1]:{new} "))
    first.known_hosts.write_text("\n".join(lines) + "\n")
    return dataclasses.replace(
        first, config_path=config_path, port=port, machine_port=machine_port,
        process=serve(config_path),
    )  # fmt: skip


def wait_for_text(path: Path, needle: str, timeout: float = 10) -> str:
    """The text of ``path`` once it contains ``needle`` (or once ``timeout`` passed)."""
    deadline = time.monotonic() + timeout
    while True:
        text = path.read_text(errors="replace")
        if needle in text or time.monotonic() > deadline:
            return text
        time.sleep(0.05)


def wait_for_records(
    gateway: Gateway, action: str, node: str, timeout: float = 10
) -> list[AuditRecord]:
    """The ``action`` records about ``node``, once there is one (or once ``timeout`` passed)."""
    deadline = time.monotonic() + timeout
    while True:
        found = node_records(gateway, action, node)
        if found or time.monotonic() > deadline:
            return found
        time.sleep(0.05)


def node_records(gateway: Gateway, action: str, node: str) -> list[AuditRecord]:
    """The human trail's ``action`` records about ``node`` (target ``node:NAME``)."""
    return [
        r
        for r in gateway.audit.events(Trail.HUMAN)
        if r.action == action and r.target == f"node:{node}"
    ]
