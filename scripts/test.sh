#!/usr/bin/env bash
# The test command: install everything the tests need (OpenSSH included), check
# (ruff, import-linter's layer contracts, mypy, the docs site), then run the suite twice:
#   1. everything on SQLite (the multi-node tests excepted);
#   2. on PostgreSQL: every test that uses the store fixture, except the real-OpenSSH
#      and SQLite-file ones, plus the multi-node tests (marker "postgres").
# PostgreSQL is started first if it is installed but stopped (scripts/postgres.sh).
# Both passes are spread over the cores by pytest-xdist, a test file per worker at a
# time (most tests wait on real programs; a file's gateway is started once):
# PAMGATE_TEST_WORKERS=N sets the number (default: one per core; 0 runs in this process).
# Arguments go to a single pytest run instead (e.g. -k lockout, -m openssh); set
# PAMGATE_TEST_DATABASE_URL to run that on PostgreSQL.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh --test
.venv/bin/ruff check .
.venv/bin/lint-imports --no-cache >/dev/null || .venv/bin/lint-imports --no-cache
.venv/bin/mypy
# The docs site: a broken link, anchor or a page left out of mkdocs.yml fails the build.
site=$(mktemp -d)
NO_MKDOCS_2_WARNING=1 .venv/bin/mkdocs build --strict --quiet --site-dir "$site"
rm -rf "$site"
spread=(-n "${PAMGATE_TEST_WORKERS:-auto}" --dist loadfile)
if [ $# -gt 0 ]; then
    exec .venv/bin/python -m pytest "$@"
fi
if [ "${PAMGATE_SKIP_POSTGRES:-}" = "1" ]; then
    echo "test: PAMGATE_SKIP_POSTGRES=1: SQLite only, the PostgreSQL pass is NOT run" >&2
    exec .venv/bin/python -m pytest "${spread[@]}" -m "not postgres"
fi
scripts/postgres.sh
.venv/bin/python -m pytest "${spread[@]}" -m "not postgres"
echo "test: PostgreSQL pass" >&2
PAMGATE_TEST_DATABASE_URL="${PAMGATE_TEST_DATABASE_URL:-postgresql+psycopg://postgres@127.0.0.1:5432/test}" \
    exec .venv/bin/python -m pytest "${spread[@]}" -m "postgres or (store and not openssh and not sqlite)"
