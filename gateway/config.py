"""Gateway configuration: a TOML file, validated into typed settings.

The file is found from ``--config PATH``, else ``$PAMGATE_CONFIG``, else
``./pamgate.toml``. Relative paths inside it are relative to the file itself,
so a data directory can be moved as a whole.

Every error names the file, the key and what is wrong, for example::

    pamgate.toml: targets[0].port: Input should be less than or equal to 65535

Unknown keys are errors too: a misspelt ``alowed_groups`` must not silently
grant nothing (or everything).
"""

from __future__ import annotations

import base64
import binascii
import ipaddress
import os
import re
import socket
import tomllib
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from gateway.errors import ConfigError, PamgateError

DEFAULT_CONFIG_NAME = "pamgate.toml"
CONFIG_ENV_VAR = "PAMGATE_CONFIG"

#: Names of users, targets and accounts: conservative POSIX-like names, so a
#: login string can be split unambiguously and names are safe in logs.
NAME_PATTERN = r"^[A-Za-z_][A-Za-z0-9_.-]{0,63}$"
NAME_RE = re.compile(NAME_PATTERN)

Name = Annotated[str, Field(pattern=NAME_PATTERN)]
Port = Annotated[int, Field(ge=1, le=65535)]

DURATION_PATTERN = r"^\d+[smhd]$"
Duration = Annotated[str, Field(pattern=DURATION_PATTERN)]


def parse_duration(text: str, option: str) -> int:
    """Seconds in a duration typed by a person, or PamgateError naming ``option``."""
    if not re.match(DURATION_PATTERN, text):
        raise PamgateError(f"{option} {text!r}: give a duration such as 90s, 15m or 2h")
    return duration_seconds(text)


def duration_seconds(text: str) -> int:
    """Seconds in a duration such as ``90s``, ``30m``, ``4h`` or ``1d``."""
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    return int(text[:-1]) * units[text[-1]]


def parse_since(text: str, option: str = "--since") -> datetime:
    """The moment an age (``30m``, ``12h``, ``7d`` ago) or an ISO time (UTC unless it says) names.

    Raises PamgateError, naming ``option``, for anything else.
    """
    text = text.strip()
    if re.match(DURATION_PATTERN, text):
        return datetime.now(UTC) - timedelta(seconds=duration_seconds(text))
    return parse_iso_time(
        text, option, expected="an age (30m, 12h, 7d) or an ISO time (2026-11-23T08:00)"
    )


def parse_iso_time(text: str, option: str, *, expected: str = "an ISO date/time") -> datetime:
    """The moment an ISO date or date/time typed by a person names, UTC unless it gives a zone.

    Raises PamgateError naming ``option`` and what to give instead (``expected``).
    """
    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        raise PamgateError(f"{option} {text!r}: give {expected}") from None
    return when if when.tzinfo else when.replace(tzinfo=UTC)


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class GatewaySettings(_Section):
    """``[gateway]``: where state lives and what this node is called."""

    #: This gateway's name, shown to users and in the audit trail.
    name: Name = "pamgate"
    #: Where keys, the SQLite database, recordings and logs live (relative to the config file).
    data_dir: Path = Path(".")
    #: SQLAlchemy URL. Empty means a SQLite file ``pamgate.db`` in ``data_dir``.
    database_url: str = ""
    #: Level of the gateway log (``DATA_DIR/logs/gateway.log``).
    log_level: Literal["debug", "info", "warning", "error"] = "info"


class NodeSettings(_Section):
    """``[node]``: this node among several gateway nodes sharing one database."""

    #: Unique per node; live sessions and heartbeats carry it. Default: the host name.
    name: Name | None = None
    #: How often this node records that it is alive.
    heartbeat_interval_seconds: float = Field(default=2.0, gt=0, le=60)
    #: A node silent this long is taken for dead: a surviving node marks its
    #: live sessions interrupted.
    heartbeat_timeout_seconds: float = Field(default=15.0, gt=0)
    #: Threads for database work (logins, access decisions, audit writes). Each kind
    #: of blocking work has its own threads, so a burst of one (many sessions ending
    #: at once) cannot hold up the others. Keep it within the database pool (15).
    database_threads: int = Field(default=8, ge=1, le=64)
    #: Threads that wait for command extraction (it runs in a worker process).
    extraction_threads: int = Field(default=2, ge=1, le=32)
    #: Threads for recording files: sealing, compressing and reading them.
    file_threads: int = Field(default=4, ge=1, le=64)
    #: Relay worker processes ``pamgate serve`` runs, each listening on both lanes'
    #: ports (``SO_REUSEPORT``) with its own event loop and database pool: 0 means one
    #: per core, 1 one process for everything (no separate workers). ``serve
    #: --workers N`` overrides it.
    workers: int = Field(default=0, ge=0, le=512)

    def worker_count(self, override: int | None = None) -> int:
        """How many relay processes to run: ``override`` (``serve --workers``) if given,
        else ``workers``; 0 is one per core."""
        wanted = self.workers if override is None else override
        return wanted or os.cpu_count() or 1

    @model_validator(mode="after")
    def _timeout_outlasts_heartbeats(self) -> NodeSettings:
        if self.heartbeat_timeout_seconds < 3 * self.heartbeat_interval_seconds:
            raise ValueError(
                "heartbeat_timeout_seconds must be at least 3 heartbeat intervals, "
                "or a slow node would be taken for dead"
            )
        return self


class ListenerSettings(_Section):
    """One lane's listening socket and its connection limits (sshd's names in brackets)."""

    #: The address to listen on (``0.0.0.0`` or ``::`` for every interface).
    address: str = "127.0.0.1"
    #: The TCP port this lane listens on.
    port: Port
    #: The machine lane can be switched off; the human lane always listens.
    enabled: bool = True
    #: Unauthenticated connections (``MaxStartups start:rate:full``): from ``start``
    #: on, a new one is dropped with probability ``rate`` %, rising linearly to
    #: every one at ``full``. A single number N means ``N:100:N``.
    max_startups: str = Field(default="1200:30:2400", pattern=r"^\d+(:\d+:\d+)?$")
    #: Unauthenticated connections from one source address (``PerSourceMaxStartups``;
    #: IPv6 addresses count per ``[auth] source_ipv6_prefix`` network).
    per_source_max_startups: int = Field(default=20, ge=1)
    #: Seconds a client has to sign in before it is disconnected (``LoginGraceTime``).
    login_grace_time_seconds: float = Field(default=60, gt=0, le=600)
    #: Load balancers (CIDRs) whose connections start with a PROXY protocol header
    #: (v1 or v2) naming the real client; empty means none. From these addresses the
    #: header is required, from any other it is refused.
    proxy_protocol_from: list[str] = []
    #: Session channels open at once on one connection (``MaxSessions``).
    max_sessions: int = Field(default=10, ge=1, le=1000)

    @field_validator("proxy_protocol_from")
    @classmethod
    def _check_proxies(cls, networks: list[str]) -> list[str]:
        for index, network in enumerate(networks):
            try:
                ipaddress.ip_network(network, strict=True)
            except ValueError as exc:
                raise ValueError(f"proxy_protocol_from[{index}]: {exc}") from None
        return networks

    @property
    def trusted_proxies(self) -> list[ipaddress.IPv4Network | ipaddress.IPv6Network]:
        """``proxy_protocol_from`` as networks."""
        return [ipaddress.ip_network(network) for network in self.proxy_protocol_from]

    @property
    def startups(self) -> tuple[int, int, int]:
        """``max_startups`` as (start, rate, full)."""
        parts = [int(part) for part in self.max_startups.split(":")]
        return (parts[0], 100, parts[0]) if len(parts) == 1 else (parts[0], parts[1], parts[2])

    @model_validator(mode="after")
    def _check_startups(self) -> ListenerSettings:
        start, rate, full = self.startups
        if not 1 <= start <= full:
            raise ValueError(
                f"max_startups {self.max_startups!r}: give start:rate:full with 1 <= start <= full"
            )
        if rate > 100:
            raise ValueError(f"max_startups {self.max_startups!r}: rate is a percentage (0-100)")
        return self


class MachineListenerSettings(ListenerSettings):
    """The machine lane's listener: workloads sign in with a certificate in one round trip,
    and a CI runner starts many jobs at once from one address."""

    per_source_max_startups: int = Field(default=100, ge=1)
    login_grace_time_seconds: float = Field(default=30, gt=0, le=600)


class Listeners(_Section):
    """``[listeners]``: one listener per lane, each on its own address and port."""

    human: ListenerSettings = ListenerSettings(port=2222)
    machine: MachineListenerSettings = MachineListenerSettings(port=2223)


class AuthSettings(_Section):
    """``[auth]``: failed-login throttling and TOTP tolerance for the human lane.

    Failures are counted per (user name, source address) and per source
    address, never per user name alone, so failures from one address never
    hold the same user back at another. Each counter allows a few failures
    freely; beyond them each attempt waits ``backoff_seconds``, doubling up
    to ``max_backoff_seconds``, and a counter forgets one failure every
    ``*_forget_seconds`` (a steady attacker gets one guess per that period).
    """

    #: Failures one user name may have from one address before back-off starts.
    user_source_failures: int = Field(default=5, ge=1)
    #: A (user name, address) counter forgets one failure this often.
    user_source_forget_seconds: float = Field(default=3600, gt=0)
    #: Failures one address may have (any user names) before back-off starts.
    source_failures: int = Field(default=20, ge=1)
    #: An address's counter forgets one failure this often.
    source_forget_seconds: float = Field(default=300, gt=0)
    #: The first back-off; each further failure doubles it.
    backoff_seconds: float = Field(default=30, gt=0)
    #: The longest back-off.
    max_backoff_seconds: float = Field(default=3600, gt=0)
    #: IPv6 sources count per network of this prefix length (one host owns a /64).
    source_ipv6_prefix: int = Field(default=64, ge=32, le=128)
    #: Sign-in attempts (a password, or a key and then a code) on one connection.
    max_attempts_per_connection: int = Field(default=3, ge=1, le=10)
    #: Minimum time a failed attempt takes. It doubles with each recent failure
    #: from the same source (capped at 8x), which slows guessing and makes a
    #: wrong password for a known user take as long as any attempt for an
    #: unknown one.
    failure_delay_seconds: float = Field(default=1.0, ge=0, le=30)
    #: TOTP steps (30 s each) accepted either side of now, for clock skew.
    totp_skew_steps: int = Field(default=1, ge=0, le=3)
    #: Lifetime of a login certificate from ``pamgate-login`` when none is asked for.
    login_certificate_ttl: Duration = "8h"
    #: The longest login certificate ``pamgate-login --ttl`` may ask for.
    login_certificate_max_ttl: Duration = "24h"
    #: Bind every login certificate to the address it was issued to (``source-address``);
    #: when false, ``pamgate-login --bind-source`` asks for it.
    login_certificate_bind_source: bool = False
    #: Groups whose members may answer the password prompt with the password and the
    #: current code appended (for tools that answer one prompt only: sshpass, plink -pw).
    password_with_code_groups: list[Name] = []

    @model_validator(mode="after")
    def _check_backoff(self) -> AuthSettings:
        if self.max_backoff_seconds < self.backoff_seconds:
            raise ValueError("max_backoff_seconds is shorter than backoff_seconds")
        if duration_seconds(self.login_certificate_max_ttl) < duration_seconds(
            self.login_certificate_ttl
        ):
            raise ValueError("login_certificate_max_ttl is shorter than login_certificate_ttl")
        return self


class UpstreamSettings(_Section):
    """``[upstream]``: how the gateway connects to targets."""

    #: Lifetime of the per-session upstream certificate. At most two minutes:
    #: it is needed only for the login to the target.
    certificate_ttl_seconds: int = Field(default=120, ge=10, le=120)
    #: Backdating of the certificate's start, for target clock skew.
    certificate_backdate_seconds: int = Field(default=60, ge=0, le=60)
    #: Seconds to wait for a target to accept the connection before the session is refused.
    connect_timeout_seconds: float = Field(default=10.0, gt=0, le=120)


class SessionSettings(_Section):
    """``[session]``: what a session may carry to the target."""

    #: Environment variables passed through. A trailing ``*`` matches a prefix.
    env_allow: list[str] = ["LANG", "LC_*", "TERM"]


class RecordingSettings(_Section):
    """``[recordings]``: where and how sessions are recorded."""

    #: Folder for recordings; relative paths are inside the data directory. With an
    #: object store (``url``) it holds only this node's spool of live recordings and its
    #: cache of downloaded ones, and is not shared.
    directory: Path = Path("recordings")
    #: Where sealed recordings are kept: empty for ``directory`` (a folder every node
    #: mounts), or an S3-compatible bucket, ``s3://BUCKET/PREFIX``.
    url: str = ""
    #: The S3 endpoint (MinIO, Ceph, a moto server...); empty: ``AWS_ENDPOINT_URL``, else AWS.
    s3_endpoint_url: str = ""
    #: The S3 region; empty: ``AWS_REGION`` (or ``AWS_DEFAULT_REGION``), else ``us-east-1``.
    s3_region: str = ""
    #: S3 access key id; empty: ``AWS_ACCESS_KEY_ID`` or the standard AWS credential chain.
    s3_access_key_id: str = ""
    #: S3 secret key; empty: ``AWS_SECRET_ACCESS_KEY`` or the standard AWS credential chain.
    #: Prefer the environment: this file is readable by whoever runs the node.
    s3_secret_access_key: str = ""
    #: Seconds between uploads of a live recording's new lines (one chunk object each):
    #: a node that dies loses at most about this much of its live sessions.
    s3_upload_interval_seconds: float = Field(default=2.0, gt=0, le=60)
    #: Seconds one request to the bucket may take (connect, then each read) before it counts
    #: as failed. Requests are tried three times: a session whose recording cannot be
    #: uploaded for about three times this long is ended (fail closed).
    s3_timeout_seconds: float = Field(default=5.0, gt=0, le=300)
    #: Object lock on sealed recordings: ``governance`` or ``compliance`` retention for
    #: ``s3_object_lock_days``, when the bucket has object lock enabled (otherwise the node
    #: logs that it stores recordings without retention). ``none``: no retention is asked for.
    s3_object_lock: Literal["none", "governance", "compliance"] = "none"
    #: Days a sealed recording is retained under ``s3_object_lock``.
    s3_object_lock_days: int = Field(default=365, ge=1, le=36500)
    #: Compress sealed recordings; readers decompress transparently.
    compression: Literal["none", "gzip", "zstd"] = "none"
    #: For sessions without a pty (exec, ``ssh -T``), bytes of stdout, of stderr and of
    #: stdin kept in the recording (digests and byte counts always cover everything).
    #: 0 = metadata only.
    exec_payload_cap_bytes: int = Field(default=1024 * 1024, ge=0)

    @field_validator("url")
    @classmethod
    def _check_url(cls, url: str) -> str:
        if url and not re.match(r"^s3://[a-z0-9][a-z0-9.-]{1,61}[a-z0-9](/.*)?$", url):
            raise ValueError(
                "give s3://BUCKET or s3://BUCKET/PREFIX (a lower-case S3 bucket name), "
                "or leave it empty for the recordings folder"
            )
        return url

    @property
    def bucket(self) -> str:
        """The bucket of an ``s3://`` url (empty without one)."""
        return self.url.removeprefix("s3://").partition("/")[0]

    @property
    def prefix(self) -> str:
        """The key prefix of an ``s3://`` url, without slashes at either end."""
        return self.url.removeprefix("s3://").partition("/")[2].strip("/")


class ApprovalSettings(_Section):
    """``[approvals]``: requests, break-glass and who is told about them."""

    #: Unanswered requests expire after this long.
    request_ttl: Duration = "30m"
    #: Break-glass: the shortest justification accepted (characters).
    break_glass_min_justification: int = Field(default=20, ge=1, le=1000)
    #: Break-glass reviews are overdue after this long.
    break_glass_review_within: Duration = "24h"
    #: Groups whose members may review break-glass use (never their own).
    reviewer_groups: list[Name] = ["approvers", "auditors"]
    #: URLs that receive a JSON POST for new requests, decisions and break-glass.
    webhooks: list[str] = []

    @field_validator("webhooks")
    @classmethod
    def _check_webhooks(cls, urls: list[str]) -> list[str]:
        for index, url in enumerate(urls):
            if not url.startswith(("http://", "https://")):
                raise ValueError(f"webhooks[{index}]: {url!r} is not an http(s) URL")
        return urls


class ReviewSettings(_Section):
    """``[reviews]``: entitlement review campaigns (``pamgate review``) and staleness."""

    #: Members may decide any review item (never one about themselves), besides its owners.
    reviewer_groups: list[Name] = ["auditors", "pamgate-admins"]
    #: A human's reviewers: for each group of theirs named here, the members of its manager
    #: group (``ops = "ops-leads"``). Without one, ``reviewer_groups`` review them.
    manager_groups: dict[str, Name] = {}
    #: Suspend an NHI (disable a human) whose review item is not decided by its due date.
    suspend_overdue: bool = False
    #: ``pamgate access stale`` without ``--days``: unused this many days is stale.
    stale_after_days: int = Field(default=30, ge=1, le=3650)


class SyslogSettings(_Section):
    """``[audit.syslog]``: forward every audit record to a syslog collector (RFC 5424)."""

    #: The collector's host name or address.
    host: str
    #: The collector's port.
    port: Port = 514
    #: ``udp`` (one datagram per record) or ``tcp`` (RFC 6587 octet counting).
    protocol: Literal["udp", "tcp"] = "udp"
    #: The APP-NAME of every message.
    app_name: str = "pamgate"


class AuditSettings(_Section):
    """``[audit]``: checkpoints and forwarding of the audit trails."""

    #: How often ``pamgate serve`` signs the trails' head hashes; 0 turns it off.
    checkpoint_interval_seconds: int = Field(default=3600, ge=0)
    syslog: SyslogSettings | None = None


class MetricsSettings(_Section):
    """``[metrics]``: Prometheus metrics and a health check over HTTP (off unless a port is set)."""

    #: The address to listen on; keep it on loopback or a management network.
    address: str = "127.0.0.1"
    #: The port for ``GET /metrics`` and ``GET /healthz``; unset means no endpoint.
    port: Port | None = None


class ConsoleSettings(_Section):
    """``[console]``: the groups that give the operator roles (in the console, the CLI and
    SSH administration alike), and when the console locks itself."""

    #: Members may approve and deny requests (so may members of a rule's approver_groups).
    approver_groups: list[Name] = ["approvers"]
    #: Members may read the audit trails, recordings and live sessions.
    auditor_groups: list[Name] = ["auditors"]
    #: Members may terminate sessions, revoke grants and manage identities.
    admin_groups: list[Name] = ["pamgate-admins"]
    #: Idle time after which the console returns to its login screen.
    idle_lock: Duration = "10m"


#: Login targets that reach the gateway itself (``ssh -t bob:console@gw``, ``ssh bob:admin@gw
#: COMMAND``), and the name the ledger gives it: no target may be called so.
RESERVED_TARGET_NAMES = frozenset({"console", "admin", "pamgate"})


class TargetSettings(_Section):
    """``[[targets]]``: one server reachable through the gateway."""

    #: The name users give in ``USER:TARGET@gateway``.
    name: Name
    #: The target's host name or address, as the gateway reaches it.
    host: str
    #: The target sshd's port.
    port: Port = 22
    #: Accounts on the target that rules may grant (``USER:TARGET:ACCOUNT@gateway``).
    accounts: list[Name] = Field(min_length=1)
    #: Account used when the login names none. Defaults to the first account.
    default_account: Name | None = None
    #: ``certificate`` mints a per-session certificate from the upstream CA.
    #: ``key`` uses a static private key: a legacy exception, logged as such.
    upstream_auth: Literal["certificate", "key"] = "certificate"
    #: Private key for ``upstream_auth = "key"``.
    key_file: Path | None = None
    #: Pinned host keys, as OpenSSH public key lines. At least one is required:
    #: the gateway never trusts a target's key on first use.
    host_keys: list[str] = Field(min_length=1)
    #: Labels that policy rules can select with ``label:NAME``.
    labels: list[Name] = []
    #: Shown in the target menu.
    description: str = ""

    @field_validator("name")
    @classmethod
    def _check_name_is_free(cls, name: str) -> str:
        if name.lower() in RESERVED_TARGET_NAMES:
            raise ValueError(
                f"{name!r} is reserved: USER:{name}@gateway reaches the gateway itself"
            )
        return name

    @field_validator("host_keys")
    @classmethod
    def _check_host_keys(cls, keys: list[str]) -> list[str]:
        for index, line in enumerate(keys):
            problem = openssh_public_key_problem(line)
            if problem:
                raise ValueError(f"host_keys[{index}]: {problem}")
        return keys

    @model_validator(mode="after")
    def _check_accounts(self) -> TargetSettings:
        if self.default_account is not None and self.default_account not in self.accounts:
            raise ValueError(
                f"default_account {self.default_account!r} is not one of accounts {self.accounts}"
            )
        if self.upstream_auth == "key" and self.key_file is None:
            raise ValueError('upstream_auth = "key" needs key_file')
        if self.upstream_auth == "certificate" and self.key_file is not None:
            raise ValueError('key_file is only used with upstream_auth = "key"')
        return self

    @property
    def account_when_unnamed(self) -> str:
        """The account used when the login names no account."""
        return self.default_account or self.accounts[0]


class RuleSettings(_Section):
    """``[[rules]]``: who may reach which targets and accounts, and how."""

    #: A unique name; sessions under the rule carry ``policy:ID`` as their authority.
    id: Name
    #: User groups the rule is for; ``"*"`` is everyone.
    groups: list[str] = Field(min_length=1)
    #: Target names, ``group:NAME`` (from ``[target_groups]``), ``label:NAME`` or ``"*"``.
    targets: list[str] = Field(min_length=1)
    #: Accounts the rule covers; empty means every account of the target.
    accounts: list[Name] = []
    #: ``allow``: at once; ``approval``: after approvers grant a request;
    #: ``deny``: never (a deny rule wins).
    mode: Literal["allow", "approval", "deny"]
    #: Groups whose members may approve (``approval`` rules).
    approver_groups: list[Name] = []
    #: Distinct approvals needed (N of the approvers).
    approvals_required: int = Field(default=1, ge=1, le=10)
    #: Longest grant an approval may give (``approval`` rules).
    max_duration: Duration = "8h"
    #: Grant length when the requester asks for none.
    default_duration: Duration = "1h"
    #: Whether a request must give a reason.
    reason_required: bool = False
    #: Days the rule applies (mon..sun, UTC); empty means every day.
    days: list[Literal["mon", "tue", "wed", "thu", "fri", "sat", "sun"]] = []
    #: Hours the rule applies, ``HH:MM-HH:MM`` in UTC; may wrap midnight.
    hours: str | None = Field(default=None, pattern=r"^\d\d:\d\d-\d\d:\d\d$")
    #: Source networks the rule applies to (CIDRs); empty means anywhere.
    sources: list[str] = []
    #: Whether matching users may invoke break-glass instead of waiting.
    break_glass: bool = False
    #: Length of the immediate grant break-glass gives.
    break_glass_max_duration: Duration = "30m"
    #: SFTP, scp and rsync: ``allow``, ``download-only``, ``upload-only`` or ``deny``.
    file_transfer: Literal["allow", "download-only", "upload-only", "deny"] = "deny"
    #: Largest file (SFTP, scp) or rsync stream a transfer may move; unset means no cap.
    file_transfer_max_bytes: int | None = Field(default=None, ge=1)
    #: ``host:port`` destinations ``ssh -L`` may reach, as seen from the target.
    forward_local: list[str] = []
    #: Ask for a verification code even from someone holding a valid login certificate.
    fresh_mfa: bool = False
    #: The password prompt also takes the password with the current code appended.
    password_with_code: bool = False

    @field_validator("forward_local")
    @classmethod
    def _check_forward_local(cls, destinations: list[str]) -> list[str]:
        for index, entry in enumerate(destinations):
            host, sep, port = entry.rpartition(":")
            if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
                raise ValueError(f"forward_local[{index}]: {entry!r} is not HOST:PORT")
        return destinations

    @field_validator("sources")
    @classmethod
    def _check_sources(cls, sources: list[str]) -> list[str]:
        for index, network in enumerate(sources):
            try:
                ipaddress.ip_network(network, strict=False)
            except ValueError:
                raise ValueError(f"sources[{index}]: {network!r} is not a CIDR") from None
        return sources

    @field_validator("hours")
    @classmethod
    def _check_hours(cls, hours: str | None) -> str | None:
        if hours is not None:
            for part in hours.split("-"):
                hour, minute = (int(x) for x in part.split(":"))
                if hour > 23 or minute > 59:
                    raise ValueError(f"{part!r} is not a time of day")
        return hours

    @model_validator(mode="after")
    def _check_rule(self) -> RuleSettings:
        if self.mode == "approval" and not self.approver_groups:
            raise ValueError("an approval rule needs approver_groups")
        if duration_seconds(self.default_duration) > duration_seconds(self.max_duration):
            raise ValueError("default_duration is longer than max_duration")
        return self


class GatewayConfig(_Section):
    """The whole configuration file."""

    gateway: GatewaySettings = GatewaySettings()
    node: NodeSettings = NodeSettings()
    listeners: Listeners = Listeners()
    auth: AuthSettings = AuthSettings()
    upstream: UpstreamSettings = UpstreamSettings()
    session: SessionSettings = SessionSettings()
    audit: AuditSettings = AuditSettings()
    recordings: RecordingSettings = RecordingSettings()
    approvals: ApprovalSettings = ApprovalSettings()
    console: ConsoleSettings = ConsoleSettings()
    metrics: MetricsSettings = MetricsSettings()
    reviews: ReviewSettings = ReviewSettings()
    targets: list[TargetSettings] = []
    #: Named sets of targets for rules (``group:NAME``).
    target_groups: dict[str, list[Name]] = {}
    rules: list[RuleSettings] = []

    #: The file this was loaded from (not part of the TOML).
    source: Path = Field(default=Path(DEFAULT_CONFIG_NAME), exclude=True)

    @model_validator(mode="after")
    def _check_references(self) -> GatewayConfig:
        seen: set[str] = set()
        for target in self.targets:
            if target.name in seen:
                raise ValueError(f"target name {target.name!r} is used twice")
            seen.add(target.name)
        for group, members in self.target_groups.items():
            for member in members:
                if member not in seen:
                    raise ValueError(f"target_groups.{group}: no target named {member!r}")
        labels = {label for target in self.targets for label in target.labels}
        rule_ids: set[str] = set()
        for index, rule in enumerate(self.rules):
            if rule.id in rule_ids:
                raise ValueError(f"rules[{index}]: rule id {rule.id!r} is used twice")
            rule_ids.add(rule.id)
            for selector in rule.targets:
                kind, _, name = selector.partition(":")
                known = (
                    selector == "*"
                    or (not name and selector in seen)
                    or (kind == "group" and name in self.target_groups)
                    or (kind == "label" and name in labels)
                )
                if not known:
                    raise ValueError(
                        f"rules[{index}] ({rule.id}): target {selector!r} matches nothing "
                        '(use a target name, group:NAME, label:NAME or "*")'
                    )
        return self

    @property
    def data_dir(self) -> Path:
        """The data directory, resolved against the config file's folder."""
        return (self.source.parent / self.gateway.data_dir).resolve()

    @property
    def database_url(self) -> str:
        """The SQLAlchemy URL of the store."""
        if self.gateway.database_url:
            return self.gateway.database_url
        return f"sqlite:///{self.data_dir / 'pamgate.db'}"

    @property
    def node_name(self) -> str:
        """This node's name: ``[node] name``, else the host name (made a valid name)."""
        if self.node.name:
            return self.node.name
        host = re.sub(r"[^A-Za-z0-9_.-]", "-", socket.gethostname())[:64]
        return host if NAME_RE.match(host) else f"node-{host}"[:64]

    @property
    def recordings_dir(self) -> Path:
        """The recordings folder, resolved against the data directory."""
        return (self.data_dir / self.recordings.directory).resolve()

    def target(self, name: str) -> TargetSettings | None:
        """The target called ``name``, or None."""
        return next((t for t in self.targets if t.name == name), None)

    def resolve_path(self, path: Path) -> Path:
        """A path from the file, resolved against the file's folder."""
        return (self.source.parent / path).resolve()


def openssh_public_key_problem(line: str) -> str | None:
    """Say what is wrong with an OpenSSH public key line, or None if it is well formed.

    This checks the shape only (type, base64 blob whose embedded type matches),
    which is enough to catch pasting errors without importing SSH code here.
    """
    parts = line.split()
    if len(parts) < 2:
        return "expected an OpenSSH public key line: '<type> <base64> [comment]'"
    key_type, blob = parts[0], parts[1]
    try:
        raw = base64.b64decode(blob, validate=True)
    except (binascii.Error, ValueError):
        return "the key data is not valid base64"
    if len(raw) < 4:
        return "the key data is too short"
    length = int.from_bytes(raw[:4], "big")
    embedded = raw[4 : 4 + length]
    if embedded != key_type.encode():
        return f"the key data is for {embedded.decode(errors='replace')!r}, not {key_type!r}"
    return None


def find_config_path(explicit: str | os.PathLike[str] | None) -> Path:
    """The config path from ``--config``, then ``$PAMGATE_CONFIG``, then ``./pamgate.toml``."""
    if explicit:
        return Path(explicit)
    from_env = os.environ.get(CONFIG_ENV_VAR)
    if from_env:
        return Path(from_env)
    return Path(DEFAULT_CONFIG_NAME)


def load_config(path: str | os.PathLike[str]) -> GatewayConfig:
    """Read and validate the config file at ``path``.

    Raises :class:`ConfigError` naming the file, the key and the problem.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(
            f"{path}: no such config file (give --config PATH, set {CONFIG_ENV_VAR}, "
            f"or run 'pamgate init' to create one)"
        ) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read config file: {exc}") from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    try:
        return GatewayConfig.model_validate({**data, "source": path.resolve()})
    except ValidationError as exc:
        raise ConfigError(_describe_validation_error(path, exc)) from None


#: ``[auth]`` keys of the per-user lockout that throttling replaced, and what replaced them.
_REPLACED_AUTH_KEYS = {
    "auth.max_failures_per_user": "auth.user_source_failures (per user name and address)",
    "auth.max_failures_per_source": "auth.source_failures",
    "auth.failure_window_seconds": "auth.user_source_forget_seconds and source_forget_seconds",
    "auth.lockout_seconds": "auth.backoff_seconds and auth.max_backoff_seconds",
}


def _describe_validation_error(path: Path, exc: ValidationError) -> str:
    lines = []
    for error in exc.errors():
        location = _format_location(error["loc"])
        message = error["msg"].removeprefix("Value error, ")
        if error["type"] == "extra_forbidden":
            message = "unknown key (check the spelling against config/pamgate.example.toml)"
            if location.endswith("allowed_groups"):
                message = (
                    "allowed_groups was replaced by [[rules]] (see config/pamgate.example.toml)"
                )
            replaced = _REPLACED_AUTH_KEYS.get(location)
            if replaced:
                message = f"replaced by {replaced} (see config/pamgate.example.toml)"
        lines.append(f"{path}: {location or '(top level)'}: {message}")
    return "\n".join(lines)


def _format_location(location: tuple[int | str, ...]) -> str:
    text = ""
    for part in location:
        if isinstance(part, int):
            text += f"[{part}]"
        else:
            text += f".{part}" if text else str(part)
    return text
