#!/usr/bin/env bash
# The whole suite on a busy machine: `make test` RUNS times in a row (default 3), each with BURNERS
# CPU-burning processes beside it (default 2). Prints one line per run: exit status, seconds, and
# pytest's summary. Run it from the repository root, ideally on a fresh clone.
set -u
runs=${RUNS:-3}
burners=${BURNERS:-2}
for i in $(seq 1 "$runs"); do
  pids=()
  for _ in $(seq 1 "$burners"); do
    python3 -c 'while True: pass' &
    pids+=($!)
  done
  start=$(date +%s)
  make test > "under_load_$i.log" 2>&1
  rc=$?
  kill "${pids[@]}" 2>/dev/null
  wait "${pids[@]}" 2>/dev/null
  summary=$(grep -E "passed|failed" "under_load_$i.log" | tail -1)
  echo "run $i: exit $rc in $(( $(date +%s) - start )) s — $summary"
done
