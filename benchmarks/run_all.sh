#!/usr/bin/env bash
# Every benchmark; prints figures only (nothing here passes or fails on speed).
# The serve benchmarks take minutes; pg_instances.py runs when a PostgreSQL database it may
# empty is named (BENCH_DATABASE or FLOWRUN_TEST_POSTGRES_URL).
set -euo pipefail
cd "$(dirname "$0")"
scripts=(cli_startup.py validate_speed.py dry_run_throughput.py serve_ingest.py serve_e2e.py pending_waits.py)
if [ -n "${BENCH_DATABASE:-${FLOWRUN_TEST_POSTGRES_URL:-}}" ]; then scripts+=(pg_instances.py); fi
for script in "${scripts[@]}" "$@"; do
  echo "== $script"
  ../.venv/bin/python "$script"
done
