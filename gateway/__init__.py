"""pamgate's gateway: the SSH lanes, the relay, the CAs and the access domain.

Protocol code (asyncssh): :mod:`gateway.human_lane`, :mod:`gateway.partial_auth`,
:mod:`gateway.relay`, :mod:`gateway.admission`, :mod:`gateway.dialog`,
:mod:`gateway.upstream`, :mod:`gateway.upstream_ca`.
Access-domain code (plain Python, no sockets): :mod:`gateway.identities`,
:mod:`gateway.lockout`, :mod:`gateway.policy`, :mod:`gateway.access`,
:mod:`gateway.approvals`, :mod:`gateway.breakglass`, :mod:`gateway.sessions`,
:mod:`gateway.audit`, :mod:`gateway.recording_service`, :mod:`gateway.config`,
:mod:`gateway.store`. :class:`gateway.services.GatewayServices` wires them for
the lanes, the CLI and the console.
"""
