"""The data directory: where a gateway node keeps its keys and (by default) its database.

Layout::

    DATA_DIR/
      pamgate.db                 SQLite store (unless database_url says otherwise)
      keys/human_host_ed25519    host key the human lane presents to clients
      keys/machine_host_ed25519  host key the machine lane presents to workloads
      keys/upstream_ca           CA that signs per-session certificates for targets
      keys/machine_ca            CA for non-human identities (the machine lane only)
      keys/login_ca              CA for people's login certificates (pamgate-login; human lane)
      keys/audit_signing         Ed25519 key that signs audit checkpoints (+ .pub)
      keys/totp_secrets.key      AES-256-GCM key sealing the TOTP secrets in the database
                                 (or $PAMGATE_TOTP_KEY; every node on one database needs it)
      audit/checkpoints.jsonl    signed head hashes of the audit trails; copy it off the box
      logs/gateway.log           the gateway's log, including JSON event lines

:func:`initialize` creates what is missing and never overwrites a key.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from gateway.config import GatewayConfig
from gateway.crypto.secret_box import KEY_ENV_VAR, SecretBox
from gateway.crypto.upstream_ca import ensure_key_file
from gateway.domain.audit.checkpoints import ensure_signing_key
from gateway.domain.audit.trail import ActorType, AuditEvent, AuditLog, Trail, admin_authority
from gateway.errors import PamgateError
from gateway.store.database import Store


@dataclass(frozen=True)
class DataDir:
    """Paths inside one gateway's data directory."""

    root: Path

    @property
    def keys(self) -> Path:
        return self.root / "keys"

    @property
    def human_host_key(self) -> Path:
        return self.keys / "human_host_ed25519"

    @property
    def machine_host_key(self) -> Path:
        return self.keys / "machine_host_ed25519"

    @property
    def upstream_ca_key(self) -> Path:
        return self.keys / "upstream_ca"

    @property
    def machine_ca_key(self) -> Path:
        return self.keys / "machine_ca"

    @property
    def login_ca_key(self) -> Path:
        return self.keys / "login_ca"

    @property
    def audit_signing_key(self) -> Path:
        return self.keys / "audit_signing"

    @property
    def totp_key(self) -> Path:
        return self.keys / "totp_secrets.key"

    @property
    def checkpoints(self) -> Path:
        return self.root / "audit" / "checkpoints.jsonl"

    @property
    def logs(self) -> Path:
        return self.root / "logs"

    @property
    def gateway_log(self) -> Path:
        return self.logs / "gateway.log"


def initialize(config: GatewayConfig, *, actor: str = "pamgate-init") -> list[str]:
    """Create the data directory, keys and database schema as needed.

    Keys created are recorded in the human audit trail with ``actor`` (the
    administrator). Returns a line per thing created or found, for the operator.
    """
    data = DataDir(config.data_dir)
    report = []
    for folder in (data.root, data.keys, data.logs, data.checkpoints.parent):
        if not folder.exists():
            folder.mkdir(parents=True, mode=0o700)
            report.append(f"created {folder}")
    for private in (data.keys, data.logs):
        os.chmod(private, 0o700)
    if data.root.stat().st_mode & 0o077:
        report.append(
            f"warning: {data.root} is readable by other users; "
            f"consider 'chmod 700 {data.root}' (the database and keys inside are 0600)"
        )
    created_keys = []
    for path, comment in (
        (data.human_host_key, f"pamgate human lane host key ({config.gateway.name})"),
        (data.machine_host_key, f"pamgate machine lane host key ({config.gateway.name})"),
        (data.upstream_ca_key, f"pamgate upstream CA ({config.gateway.name})"),
        (data.login_ca_key, f"pamgate login CA ({config.gateway.name})"),
    ):
        created = ensure_key_file(path, comment)
        report.append(f"{'created' if created else 'kept existing'} {path}")
        if created:
            created_keys.append(path.name)
    machine_ca_created = ensure_key_file(
        data.machine_ca_key, f"pamgate machine CA ({config.gateway.name})"
    )
    report.append(f"{'created' if machine_ca_created else 'kept existing'} {data.machine_ca_key}")
    created = ensure_signing_key(data.audit_signing_key)
    report.append(f"{'created' if created else 'kept existing'} {data.audit_signing_key}")
    if created:
        created_keys.append(data.audit_signing_key.name)
    report.extend(ensure_totp_key(config))
    store = Store(config.database_url)
    try:
        store.create_schema()
        audit = AuditLog(store)
        if created_keys:
            audit.record(Trail.HUMAN, AuditEvent(
                actor=actor, actor_type=ActorType.ADMIN, action="ca.created",
                target=f"node:{config.gateway.name}", authority=admin_authority(actor),
                details={"keys": created_keys},
            ))  # fmt: skip
        if machine_ca_created:
            # CA actions go to the trail of the identities they concern.
            audit.record(Trail.MACHINE, AuditEvent(
                actor=actor, actor_type=ActorType.ADMIN, action="ca.created",
                target=f"node:{config.gateway.name}", authority=admin_authority(actor),
                details={"keys": [data.machine_ca_key.name]},
            ))  # fmt: skip
    finally:
        store.dispose()
    report.append(f"database ready at {config.database_url}")
    return report


def ensure_totp_key(config: GatewayConfig) -> list[str]:
    """Create the TOTP secret key file unless it exists or ``$PAMGATE_TOTP_KEY`` gives the key.

    Returns lines for the operator.
    """
    path = DataDir(config.data_dir).totp_key
    if os.environ.get(KEY_ENV_VAR):
        return [f"TOTP secret key from ${KEY_ENV_VAR}"]
    if SecretBox.write_key_file(path):
        return [f"created {path} (every node on this database needs a copy; keep one safe)"]
    return [f"kept existing {path}"]


def check_ready(config: GatewayConfig) -> None:
    """Refuse to work on a data directory that 'pamgate init' has not prepared."""
    data = DataDir(config.data_dir)
    for path in (data.human_host_key, data.machine_host_key, data.upstream_ca_key):
        if not path.exists():
            raise PamgateError(
                f"{path} is missing: run 'pamgate --config {config.source} init' first"
            )
