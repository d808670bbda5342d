#!/usr/bin/env bash
# Runs ON each TPU worker, started detached by tools/tpu/start.sh (you do not run it yourself):
#   worker_loop.sh STATE_DIR -- gptjax train --config ... --workdir ...
# Runs the command; after exit 75 (preempted, checkpoint committed) it starts it again, which
# resumes from the workdir's latest checkpoint, unless tools/tpu/stop.sh left STATE_DIR/stop.
# Writes STATE_DIR/loop.pid, train.pid (the running command) and exit_code (its last status).
set -euo pipefail

if [[ $# -lt 3 || $2 != -- ]]; then
  echo "usage: $(basename "$0") STATE_DIR -- COMMAND [ARGS...]" >&2
  exit 2
fi
state=$1
shift 2
mkdir -p "$state"
rm -f "$state/stop" "$state/exit_code"
echo $$ >"$state/loop.pid"
trap 'rm -f "$state/loop.pid" "$state/train.pid"' EXIT

while :; do
  echo "=== $(date -u +%Y-%m-%dT%H:%M:%SZ) $(hostname): $*"
  rc=0
  "$@" &
  echo $! >"$state/train.pid"
  wait $! || rc=$?
  echo "$rc" >"$state/exit_code"
  echo "=== $(date -u +%Y-%m-%dT%H:%M:%SZ) exit code $rc"
  if [[ $rc -ne 75 || -e $state/stop ]]; then
    exit "$rc"
  fi
  echo "=== exit 75: preempted with a committed checkpoint; starting again to resume"
  sleep 5
done
