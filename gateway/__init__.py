"""pamgate's gateway: the SSH lanes, the relay, the CAs and the access domain.

Protocol code (asyncssh): :mod:`gateway.ssh.human.lane`, :mod:`gateway.ssh.partial_auth`,
:mod:`gateway.ssh.relay`, :mod:`gateway.ssh.human.admission`, :mod:`gateway.ssh.dialog`,
:mod:`gateway.ssh.upstream`, :mod:`gateway.crypto.upstream_ca`.
Access-domain code (plain Python, no sockets): :mod:`gateway.domain.identities`,
:mod:`gateway.domain.lockout`, :mod:`gateway.domain.policy`, :mod:`gateway.domain.access`,
:mod:`gateway.domain.approvals`, :mod:`gateway.domain.breakglass`, :mod:`gateway.domain.sessions`,
:mod:`gateway.domain.audit.trail`, :mod:`gateway.domain.recordings.service`, :mod:`gateway.config`,
:mod:`gateway.store.database`. :class:`gateway.services.GatewayServices` wires them for
the lanes, the CLI and the console.
"""
