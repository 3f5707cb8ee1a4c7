"""The demo and the OpenSSH target launcher (tests and benchmarks use it too)."""
