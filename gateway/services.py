"""The access-domain services of one gateway node, built from its config.

The lanes, the CLI and (later) the console all take a :class:`GatewayServices`
and call these objects; none of them writes tables directly.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from datetime import timedelta

from gateway.config import GatewayConfig, duration_seconds
from gateway.crypto.keys import parse_public_key_line
from gateway.crypto.login_ca import LoginCA
from gateway.crypto.machine_ca import MachineCA
from gateway.crypto.secret_box import SecretBox
from gateway.crypto.upstream_ca import UpstreamCA
from gateway.datadir import DataDir
from gateway.domain.access import AccessDecisions
from gateway.domain.alerts import WebhookAlerts
from gateway.domain.approvals import AccessRequests
from gateway.domain.audit.checkpoints import CheckpointBook
from gateway.domain.audit.syslog import SyslogForwarder
from gateway.domain.audit.trail import AuditLog
from gateway.domain.breakglass import BreakGlass
from gateway.domain.entitlements.analysis import Entitlements
from gateway.domain.entitlements.campaigns import ReviewCampaigns
from gateway.domain.entitlements.usage import UsageReader
from gateway.domain.executors import Executors
from gateway.domain.identities import UserDirectory
from gateway.domain.live_checks import LiveCheckReader
from gateway.domain.lockout import FailureLimiter
from gateway.domain.login_certificates import LoginCertificates
from gateway.domain.machines.admission import MachineGate
from gateway.domain.machines.credentials import MachineCredentials
from gateway.domain.machines.registry import MachineRegistry
from gateway.domain.machines.revocation import MachineRevocations
from gateway.domain.node_control import NodeControl
from gateway.domain.nodes import NodeRegistry
from gateway.domain.operators import (
    ActionContext,
    LocalAdmin,
    OperatorActions,
    OperatorServices,
)
from gateway.domain.policy import Policy
from gateway.domain.recordings.service import RecordingService
from gateway.domain.session_setup import SessionSetup
from gateway.domain.sessions import SessionLedger
from gateway.domain.sign_in import SignIn
from gateway.domain.wakeups import DecisionWakeups
from gateway.errors import PamgateError
from gateway.store.database import Store
from gateway.store.notifications import PostgresDecisionChannel


@dataclass
class GatewayServices:
    """Everything a lane or command needs, wired to one store."""

    config: GatewayConfig
    data: DataDir
    store: Store
    audit: AuditLog
    checkpoints: CheckpointBook
    users: UserDirectory
    limiter: FailureLimiter
    access: AccessDecisions
    ledger: SessionLedger
    nodes: NodeRegistry
    recordings: RecordingService
    requests: AccessRequests
    breakglass: BreakGlass
    machines: MachineRegistry
    machine_ca: MachineCA
    machine_credentials: MachineCredentials
    machine_revocations: MachineRevocations
    machine_gate: MachineGate
    sign_in: SignIn
    alerts: WebhookAlerts
    login_certificates: LoginCertificates
    #: The thread pools blocking work runs on, one per kind (``[node]`` sizes them).
    executors: Executors = field(default_factory=Executors, repr=False)
    _upstream_ca: UpstreamCA | None = field(default=None, repr=False)
    #: The syslog copy of the trails, when ``[audit.syslog]`` is set (run by ``serve``).
    syslog: SyslogForwarder | None = field(default=None, repr=False)

    @classmethod
    def open(cls, config: GatewayConfig, *, worker: int | None = None) -> GatewayServices:
        """Open the store and build the services; ``worker``: the relay worker process
        (of ``pamgate serve``) they serve, which the sessions it opens carry."""
        data = DataDir(config.data_dir)
        store = Store(config.database_url)
        audit = AuditLog(store)
        alerts = WebhookAlerts(config.approvals.webhooks, audit)
        syslog = None
        if config.audit.syslog is not None:
            settings = config.audit.syslog
            syslog = SyslogForwarder(
                store, audit, settings.host, settings.port, settings.protocol, settings.app_name,
                node=config.node_name,
            )  # fmt: skip
        machines = MachineRegistry(store, audit)
        machine_ca = MachineCA(data.machine_ca_key)
        users = UserDirectory(
            store, audit, secret_box=functools.cache(lambda: SecretBox.load(data.totp_key)),
            totp_skew_steps=config.auth.totp_skew_steps,
        )  # fmt: skip
        limiter = FailureLimiter(store, audit, config.auth)
        machine_credentials = MachineCredentials(store, audit, machine_ca, alerts)
        machine_revocations = MachineRevocations(store, audit, machines, machine_ca)
        ledger = SessionLedger(store, audit, config.node_name, worker=worker)
        requests = AccessRequests(
            store,
            audit,
            alerts=alerts,
            request_ttl=timedelta(seconds=duration_seconds(config.approvals.request_ttl)),
            wakeups=DecisionWakeups(None if store.is_sqlite else PostgresDecisionChannel(store)),
        )
        return cls(
            config=config,
            data=data,
            store=store,
            audit=audit,
            checkpoints=CheckpointBook(
                audit, data.audit_signing_key, data.checkpoints, config.node_name, store=store
            ),
            users=users,
            limiter=limiter,
            access=AccessDecisions(config, Policy(config), users, requests),
            ledger=ledger,
            nodes=NodeRegistry(
                store,
                audit,
                ledger,
                config.node_name,
                timeout_seconds=config.node.heartbeat_timeout_seconds,
            ),
            recordings=RecordingService(config, store, audit),
            requests=requests,
            breakglass=BreakGlass(store, audit, alerts, config.approvals),
            machines=machines,
            machine_ca=machine_ca,
            machine_credentials=machine_credentials,
            machine_revocations=machine_revocations,
            machine_gate=MachineGate(
                machines, machine_credentials, machine_revocations, machine_ca
            ),
            sign_in=SignIn(users, limiter, audit, config.auth),
            alerts=alerts,
            login_certificates=LoginCertificates(
                store, audit, LoginCA(data.login_ca_key), config.auth
            ),
            syslog=syslog,
            executors=Executors(
                database=config.node.database_threads,
                extraction=config.node.extraction_threads,
                files=config.node.file_threads,
            ),
        )

    @property
    def upstream_ca(self) -> UpstreamCA:
        """The upstream CA, loaded from its key file on first use."""
        if self._upstream_ca is None:
            self._upstream_ca = UpstreamCA.from_file(
                self.data.upstream_ca_key,
                self.store,
                ttl_seconds=self.config.upstream.certificate_ttl_seconds,
                backdate_seconds=self.config.upstream.certificate_backdate_seconds,
            )
        return self._upstream_ca

    @functools.cached_property
    def session_setup(self) -> SessionSetup:
        """Session setup and teardown, shared by both lanes."""
        return SessionSetup(self.config, self.ledger, self.recordings, lambda: self.upstream_ca)

    @functools.cached_property
    def entitlements(self) -> Entitlements:
        """The access report, stale findings and narrower scopes."""
        return Entitlements(
            self.config, self.access, self.requests, self.users, self.machines,
            UsageReader(self.store),
        )  # fmt: skip

    @functools.cached_property
    def reviews(self) -> ReviewCampaigns:
        """Entitlement review campaigns."""
        return ReviewCampaigns(
            self.config, self.store, self.audit, self.alerts, self.users, self.machines,
            self.machine_revocations, self.entitlements,
        )  # fmt: skip

    @functools.cached_property
    def node_control(self) -> NodeControl:
        """Reload and drain requests to the nodes, and this node's answers."""
        return NodeControl(
            self.store, self.audit, self.config.node_name,
            timeout_seconds=self.config.node.heartbeat_timeout_seconds,
        )  # fmt: skip

    @functools.cached_property
    def live_checks(self) -> LiveCheckReader:
        """What changed for live sessions (read by each lane's watch every second)."""
        return LiveCheckReader(
            self.ledger, self.users, self.requests, self.machines, self.login_certificates
        )

    def operator_actions(
        self, name: str, *, context: ActionContext | None = None
    ) -> OperatorActions:
        """What the pamgate user ``name`` may do as an operator, each action checked against
        their roles as they are then; ``context`` (where the actions come from) goes into
        the events they cause."""
        return OperatorActions(self._operator_services, name, context=context)

    def local_admin_actions(self, who: LocalAdmin) -> OperatorActions:
        """What the local administrator (``pamgate`` run on this host) may do: everything,
        recorded as ``local-admin:<os-user>@<host>``."""
        return OperatorActions(self._operator_services, who)

    @functools.cached_property
    def _operator_services(self) -> OperatorServices:
        def machine_host_key() -> str:
            path = self.data.machine_host_key
            try:
                key, _, _ = parse_public_key_line(path.with_name(path.name + ".pub").read_text())
            except OSError as exc:
                raise PamgateError(
                    f"cannot read the machine lane host key: {exc.strerror}"
                ) from None
            return key

        return OperatorServices(
            config=self.config, users=self.users, limiter=self.limiter, access=self.access,
            requests=self.requests, breakglass=self.breakglass, ledger=self.ledger,
            recordings=self.recordings, audit=self.audit, checkpoints=self.checkpoints,
            machines=self.machines, machine_credentials=self.machine_credentials,
            machine_revocations=self.machine_revocations, machine_host_key=machine_host_key,
            entitlements=self.entitlements, reviews=self.reviews,
            login_certificates=self.login_certificates,
        )  # fmt: skip

    def close(self) -> None:
        """Stop the recording flusher; release the database connections and the syslog socket."""
        self.recordings.stop()
        self.executors.shutdown()
        self.requests.wakeups.close()
        if self.syslog is not None:
            self.syslog.close()
        self.store.dispose()
