#!/usr/bin/env bash
# Make sure the local PostgreSQL server the tests use is running: start it if it
# is installed but stopped, then wait until it accepts connections on 127.0.0.1:5432.
# Exits 1, saying why, if there is none (set PAMGATE_SKIP_POSTGRES=1 to run
# scripts/test.sh without the PostgreSQL pass).
set -euo pipefail

if pg_isready -q -h 127.0.0.1 -p 5432 2>/dev/null; then
    exit 0
fi
if ! command -v pg_lsclusters >/dev/null 2>&1 || [ -z "$(ls /etc/postgresql 2>/dev/null)" ]; then
    echo "postgres: no PostgreSQL server on 127.0.0.1:5432 and none installed" \
         "(apt-get install postgresql, or set PAMGATE_SKIP_POSTGRES=1 to skip the" \
         "PostgreSQL pass)" >&2
    exit 1
fi
version="$(ls /etc/postgresql | sort -V | tail -n 1)"
echo "postgres: starting cluster $version/main" >&2
pg_ctlcluster --skip-systemctl-redirect "$version" main start
for _ in $(seq 1 50); do
    pg_isready -q -h 127.0.0.1 -p 5432 && exit 0
    sleep 0.2
done
echo "postgres: cluster $version/main did not come up; see /var/log/postgresql/" >&2
exit 1
