"""The machine lane: certificate-only login and scoped sessions for NHIs."""
