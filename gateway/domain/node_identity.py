"""What every node sharing a database must agree on: its keys and its policy.

Nodes behind one load balancer must present the same host keys and sign with
the same CAs, or logins through one of them fail at the target (a node that
ran ``init`` before the keys were copied has CAs of its own), and they should
apply the same targets and rules. Each node records the fingerprints of its
keys and a digest of its policy in the node registry
(:mod:`gateway.domain.nodes`): a node whose keys differ from a running
node's refuses to start, naming the key; policy drift is reported by
``pamgate status`` and audited, since a rolling policy change passes through
it for a moment.
"""

from __future__ import annotations

import base64
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

from gateway.config import GatewayConfig

#: The keys every node must share, by the name the messages use.
SHARED_KEYS = {
    "human lane host key": "human_host_ed25519.pub",
    "machine lane host key": "machine_host_ed25519.pub",
    "upstream CA": "upstream_ca.pub",
    "machine CA": "machine_ca.pub",
    "login CA": "login_ca.pub",
    "audit signing key": "audit_signing.pub",
}


@dataclass(frozen=True)
class NodeIdentity:
    """One node's key fingerprints and policy digest."""

    keys: dict[str, str]
    policy_digest: str

    def key_differences(self, other: NodeIdentity) -> list[str]:
        """The keys that differ from ``other``'s: "upstream CA: SHA256:a here, SHA256:b there"."""
        return [
            f"{name}: {mine} here, {other.keys[name]} there"
            for name, mine in sorted(self.keys.items())
            if name in other.keys and other.keys[name] != mine
        ]


def node_identity(config: GatewayConfig, keys_dir: Path) -> NodeIdentity:
    """This node's identity: the public keys in ``keys_dir`` and the policy in ``config``."""
    keys = {
        name: fingerprint(keys_dir / file)
        for name, file in SHARED_KEYS.items()
        if (keys_dir / file).exists()
    }
    return NodeIdentity(keys, policy_digest(config))


def policy_digest(config: GatewayConfig) -> str:
    """sha256 of the targets, target groups and rules, independent of formatting and comments."""
    policy = {
        "targets": [target.model_dump(mode="json") for target in config.targets],
        "target_groups": config.target_groups,
        "rules": [rule.model_dump(mode="json") for rule in config.rules],
    }
    canonical = json.dumps(policy, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


def fingerprint(public_key_file: Path) -> str:
    """``SHA256:...`` as ``ssh-keygen -l`` prints it for an OpenSSH public key line, else
    ``sha256:HEX`` of the file's text (the audit signing key is PEM)."""
    text = public_key_file.read_text().strip()
    fields = text.split()
    if len(fields) >= 2 and not text.startswith("-----"):
        try:
            blob = base64.b64decode(fields[1], validate=True)
        except ValueError:
            blob = b""
        if blob:
            digest = base64.b64encode(hashlib.sha256(blob).digest()).decode().rstrip("=")
            return f"SHA256:{digest}"
    return "sha256:" + hashlib.sha256(text.encode()).hexdigest()
