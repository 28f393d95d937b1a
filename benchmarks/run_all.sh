#!/usr/bin/env bash
# Every benchmark; prints figures only (nothing here passes or fails on speed).
set -euo pipefail
cd "$(dirname "$0")"
for script in cli_startup.py validate_speed.py dry_run_throughput.py "$@"; do
  echo "== $script"
  ../.venv/bin/python "$script"
done
