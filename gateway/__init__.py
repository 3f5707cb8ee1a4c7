"""pamgate's gateway: the SSH lanes, the relay, the upstream CA and the access domain.

Protocol code (asyncssh): :mod:`gateway.human_lane`, :mod:`gateway.partial_auth`,
:mod:`gateway.relay`, :mod:`gateway.upstream`, :mod:`gateway.upstream_ca`.
Access-domain code (plain Python, no sockets): :mod:`gateway.identities`,
:mod:`gateway.lockout`, :mod:`gateway.access`, :mod:`gateway.sessions`,
:mod:`gateway.config`, :mod:`gateway.store`.
"""
