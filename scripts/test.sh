#!/usr/bin/env bash
# The test command: install everything the tests need (OpenSSH included), lint,
# then run the whole suite. Arguments go to pytest (e.g. -k lockout, -m openssh).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh --test
.venv/bin/ruff check .
exec .venv/bin/python -m pytest "$@"
