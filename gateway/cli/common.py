"""What the command groups share: the services, the acting administrator, and
reading the keys and passwords given to a command."""

from __future__ import annotations

import argparse
import getpass
import socket
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

from gateway.config import GatewayConfig
from gateway.errors import PamgateError

if TYPE_CHECKING:
    from gateway.services import GatewayServices

    #: What each group's ``add_commands`` adds its commands to.
    Subcommands = argparse._SubParsersAction[argparse.ArgumentParser]


@contextmanager
def open_services(args: argparse.Namespace) -> Iterator[GatewayServices]:
    """The gateway's services for one command, closed when it is done.

    Refuses a data directory that ``init`` has not prepared, and a database
    whose schema is behind this release (naming ``db upgrade``).
    """
    from gateway.datadir import check_ready
    from gateway.services import GatewayServices

    config: GatewayConfig = args.loaded_config
    check_ready(config)
    services = GatewayServices.open(config)
    try:
        services.store.create_schema(f"pamgate --config {config.source} db upgrade")
        yield services
    finally:
        services.close()


def actor() -> str:
    """The administrator running this command, as recorded in the audit trail."""
    return f"{getpass.getuser()}@{socket.gethostname()}"


def read_key_file(path: Path) -> str:
    """The public key line in ``path``; PamgateError for a private key or an unreadable file."""
    try:
        text = path.read_text().strip()
    except OSError as exc:
        raise PamgateError(f"cannot read SSH key file {path}: {exc.strerror}") from None
    if "PRIVATE KEY" in text:
        raise PamgateError(f"{path} is a private key: give the .pub file")
    return text


def read_password(from_stdin: bool, *, confirm: bool) -> str:
    """A password from stdin's first line, or asked on the terminal (twice with ``confirm``)."""
    if from_stdin:
        line = sys.stdin.readline()
        password = line.rstrip("\r\n")
        if not password:
            raise PamgateError("no password on stdin")
        return password
    if not sys.stdin.isatty():
        raise PamgateError("no terminal to ask for a password: use --password-stdin")
    password = getpass.getpass("Password: ")
    if confirm and getpass.getpass("Password (again): ") != password:
        raise PamgateError("the passwords do not match")
    return password


def upstream_ca_line(config: GatewayConfig) -> str:
    """The upstream CA's public key as one OpenSSH line (targets' TrustedUserCAKeys)."""
    from gateway.crypto.upstream_ca import load_private_key
    from gateway.datadir import DataDir

    key = load_private_key(DataDir(config.data_dir).upstream_ca_key, "upstream CA")
    return key.export_public_key().decode().strip()
