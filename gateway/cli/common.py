"""What the command groups share: the services, who the command acts as, and
reading the keys and passwords given to a command.

Who acts (:func:`open_operator`):

- ``PAMGATE_OPERATOR=NAME`` in the environment: the pamgate user NAME, with the
  roles their groups give them, read again for each action. The gateway sets it
  when it runs a command for an operator who logged in over SSH (that login was
  their second factor), with ``PAMGATE_OPERATOR_SESSION`` (the session, recorded
  as ``via_session`` in every event the command causes; read only with
  ``PAMGATE_OPERATOR``) and ``PAMGATE_CONFIG``.
  Only the commands on access state are there for them (:data:`OPERATOR_COMMANDS`),
  ``--config`` is ignored, and files on the gateway host are out of their reach:
  ``-`` (stdin, stdout) stands in for them.
- otherwise, for ``request approve|deny`` and ``breakglass review``: the pamgate
  user ``--as USER`` names, signed in with their password and TOTP code.
- otherwise: the local administrator, ``local-admin:<os-user>@<host>``, who holds
  every role: whoever has the config and database on this host can do anything
  anyway, so the trail names them as what they are.
"""

from __future__ import annotations

import argparse
import getpass
import os
import re
import socket
import sys
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from gateway.config import NAME_RE, GatewayConfig
from gateway.errors import PamgateError, UsageError

if TYPE_CHECKING:
    from gateway.domain.operators import LocalAdmin, OperatorActions
    from gateway.services import GatewayServices

    #: What each group's ``add_commands`` adds its commands to.
    Subcommands = argparse._SubParsersAction[argparse.ArgumentParser]

#: The pamgate user a command acts for, set by the gateway that runs it for them.
OPERATOR_ENV_VAR = "PAMGATE_OPERATOR"
#: The gateway session that command came from.
OPERATOR_SESSION_ENV_VAR = "PAMGATE_OPERATOR_SESSION"
#: The command groups an operator may run: those on access state. The rest (init, serve,
#: db, demo, console, status, check-config, ca) work on the gateway host itself.
OPERATOR_COMMANDS = frozenset(
    {"user", "machine", "audit", "recordings", "replay", "request", "grant", "breakglass",
     "policy", "access", "review"}
)  # fmt: skip
#: Stands for stdin or stdout where a command takes a file.
STDIO = "-"

_SESSION_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,127}")


@dataclass(frozen=True)
class DelegatedOperator:
    """The operator named by whoever started this command (:data:`OPERATOR_ENV_VAR`)."""

    name: str
    #: The gateway session the command came from, if it said.
    via_session: str | None


def delegated_operator(environ: Mapping[str, str] = os.environ) -> DelegatedOperator | None:
    """The operator the environment names, or None; UsageError for a malformed name or
    session id (set, even empty, the variable never means the local administrator)."""
    name = environ.get(OPERATOR_ENV_VAR)
    if name is None:
        return None
    if not NAME_RE.fullmatch(name):
        raise UsageError(f"{OPERATOR_ENV_VAR}={name!r} is not a pamgate user name")
    session = environ.get(OPERATOR_SESSION_ENV_VAR) or None
    if session is not None and not _SESSION_RE.fullmatch(session):
        raise UsageError(f"{OPERATOR_SESSION_ENV_VAR}={session!r} is not a session id")
    return DelegatedOperator(name, session)


def local_admin() -> LocalAdmin:
    """The local administrator: this host's OS user running ``pamgate``."""
    from gateway.domain.operators import LocalAdmin

    return LocalAdmin(getpass.getuser(), socket.gethostname())


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


@contextmanager
def open_operator(args: argparse.Namespace) -> Iterator[OperatorActions]:
    """The actions of the operator this command acts as (see the module docstring), over
    services opened as by :func:`open_services`."""
    with open_services(args) as services:
        yield operator_actions(services, args)


def operator_actions(services: GatewayServices, args: argparse.Namespace) -> OperatorActions:
    """The actions of the operator the environment names, else the local administrator's.

    A named operator who is unknown or disabled is refused here, before anything is done
    (OperatorSignedOut); every action checks again.
    """
    from gateway.domain.operators import ActionContext, OperatorSignedOut

    delegated: DelegatedOperator | None = getattr(args, "delegated_operator", None)
    if delegated is None:
        return services.local_admin_actions(local_admin())
    actions = services.operator_actions(
        delegated.name, context=ActionContext(via_session=delegated.via_session)
    )
    try:
        actions.operator  # noqa: B018 (read for its check)
    except OperatorSignedOut as exc:
        raise OperatorSignedOut(f"{OPERATOR_ENV_VAR}={delegated.name}: {exc}") from None
    return actions


def is_stdio(path: Path | None) -> bool:
    """Whether a file argument is ``-`` (stdin or stdout)."""
    return path is not None and str(path) == STDIO


def refuse_host_path(args: argparse.Namespace, path: Path | None, option: str) -> None:
    """UsageError if an operator named by the environment gives a file on the gateway host:
    those are the host's, not theirs to read or write. ``-`` is fine."""
    if path is not None and not is_stdio(path) and getattr(args, "delegated_operator", None):
        raise UsageError(
            f"{option} {path}: files on the gateway host are out of reach here; "
            f"give {STDIO} (stdin or stdout) instead"
        )


def read_key_file(path: Path) -> str:
    """The public key line in ``path`` (``-``: stdin); PamgateError for a private key or an
    unreadable file."""
    where = "stdin" if is_stdio(path) else str(path)
    try:
        text = sys.stdin.read().strip() if is_stdio(path) else path.read_text().strip()
    except OSError as exc:
        raise PamgateError(f"cannot read SSH key file {where}: {exc.strerror}") from None
    if "PRIVATE KEY" in text:
        what = "stdin holds a private key" if is_stdio(path) else f"{path} is a private key"
        raise PamgateError(f"{what}: give the .pub file")
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
