"""pamgate's gateway, in layers (the package is the layer; see the README's Layout).

- :mod:`gateway.cli` and :mod:`gateway.devtools`: the ``pamgate`` command and the demo;
- :mod:`gateway.ssh`: the lanes, channels, relay and upstream client (asyncssh);
- :mod:`gateway.services`: one node's domain services, wired from its config;
- :mod:`gateway.domain`: every decision, in plain Python;
- :mod:`gateway.crypto`: the CAs and certificate parsing;
- :mod:`gateway.store`: models, schema and migrations.
"""
