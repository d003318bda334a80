#!/usr/bin/env bash
# The test command with CPU-bound work beside it: LOAD busy processes (default 2) spin while
# the suite runs, then are stopped by PID. Shows that no test depends on an idle machine.
#   scripts/test_under_load.sh [pytest arguments]
set -uo pipefail
cd "$(dirname "$0")/.."
LOAD=${LOAD:-2}
pids=()
for _ in $(seq "$LOAD"); do
  python3 -c "while True: pass" &
  pids+=($!)
done
trap 'kill "${pids[@]}" 2>/dev/null' EXIT
echo "busy processes: ${pids[*]} (load $(cut -d' ' -f1 /proc/loadavg) at start)"
start=$(date +%s)
.venv/bin/python -m pytest "$@"
status=$?
echo "suite exit $status in $(( $(date +%s) - start )) s beside $LOAD busy processes (load $(cut -d' ' -f1 /proc/loadavg) at the end)"
exit $status
