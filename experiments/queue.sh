#!/usr/bin/env bash
# Run the lines of experiments/queue.txt one at a time (nice 10, one thread), re-reading the file after each,
# so lines can be added while it runs. A line that finished (or failed) is marked in runs/queue/ and not rerun;
# every command it runs is itself resumable and skips finished work. Stops when no line is left.
#   nohup experiments/queue.sh > runs/queue/log 2>&1 &
set -u
cd "$(dirname "$0")/.."
mkdir -p runs/queue
export OMP_NUM_THREADS=1 PYTHONPATH=src:experiments
PY=${PY:-/work/main/.venv/bin/python}
while true; do
  next=""
  while IFS= read -r line; do
    [[ -z "$line" || "$line" == \#* ]] && continue
    key=$(printf '%s' "$line" | md5sum | cut -c1-12)
    if [[ ! -e runs/queue/$key.done && ! -e runs/queue/$key.failed ]]; then next=$line; break; fi
  done < experiments/queue.txt
  [[ -z "$next" ]] && { echo "$(date +%T) queue empty"; exit 0; }
  echo "$(date +%T) start: $next"
  if nice -n 10 $PY $next > "runs/queue/$key.log" 2>&1; then touch "runs/queue/$key.done"; s=done
  else touch "runs/queue/$key.failed"; s=FAILED; fi
  echo "$(date +%T) $s: $next"
done
