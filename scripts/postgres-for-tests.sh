#!/usr/bin/env bash
# Start a throwaway PostgreSQL on 127.0.0.1:54329 for the test suite and print its URL.
# Installs the Debian package when the server is missing (CI runs as root).
# usage: eval "$(scripts/postgres-for-tests.sh start)"; ...; scripts/postgres-for-tests.sh stop
set -euo pipefail
PGDATA=${FLOWRUN_PGDATA:-/tmp/flowrun-test-pg}
PORT=${FLOWRUN_PGPORT:-54329}
bin() { ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1; }
as_postgres() { if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }

case "${1:-start}" in
  start)
    if [ -z "$(bin)" ]; then
      echo "installing PostgreSQL from Debian packages" >&2
      apt-get update -qq >&2
      DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >&2
    fi
    PGBIN=$(bin)
    if [ -f "$PGDATA/postmaster.pid" ]; then as_postgres "$PGBIN/pg_ctl" -D "$PGDATA" -m immediate stop >&2 || true; fi
    rm -rf "$PGDATA"; mkdir -p "$PGDATA"
    [ "$(id -u)" = 0 ] && chown postgres "$PGDATA"
    as_postgres "$PGBIN/initdb" -D "$PGDATA" -A trust -U postgres >/dev/null
    as_postgres "$PGBIN/pg_ctl" -D "$PGDATA" -l "$PGDATA/log" -w \
      -o "-p $PORT -k $PGDATA -c listen_addresses=127.0.0.1 -c fsync=off" start >&2
    echo "export FLOWRUN_TEST_POSTGRES_URL=postgresql://postgres@127.0.0.1:$PORT/postgres"
    ;;
  stop)
    PGBIN=$(bin)
    [ -n "$PGBIN" ] && [ -f "$PGDATA/postmaster.pid" ] && as_postgres "$PGBIN/pg_ctl" -D "$PGDATA" -m fast stop >&2
    ;;
esac
