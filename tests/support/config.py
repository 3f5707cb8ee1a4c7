"""Config pieces for tests that never connect anywhere."""

from __future__ import annotations

HOST_KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIFmTjzR9GHjvjKJTd3OAMN9YLhGXgOG7r3DujrQ3pqVP"

TARGET = f"""
[[targets]]
name = "web01"
host = "127.0.0.1"
accounts = ["root"]
host_keys = ["{HOST_KEY}"]
"""
