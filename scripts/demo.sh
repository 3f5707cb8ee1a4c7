#!/usr/bin/env bash
# The demo command: install pamgate, then run 'pamgate demo' (arguments are passed on,
# e.g. --data-dir DIR or --port N).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
exec .venv/bin/pamgate demo "$@"
