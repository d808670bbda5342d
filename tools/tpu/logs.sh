#!/usr/bin/env bash
# Shows a worker's training log (~/gptjax-logs/train.log), following it by default.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

usage() {
  cat <<'EOF2'
Usage: tools/tpu/logs.sh --name NAME [--worker N] [--lines N] [--no-follow] [options]

Prints the last lines of ~/gptjax-logs/train.log on one worker and follows it (Ctrl-C
stops following; the run goes on). Worker 0 prints the metrics; the others mostly repeat
start-up and errors.

  --worker N     which worker, 0-based (default 0), or all (with --no-follow: each in turn)
  --node N       with --node-count: which slice's workers, 0-based (default 0), or all
                 (with --no-follow); slice 0's worker 0 is the process that logs
  --lines N      lines of history to print first (default 100)
  --no-follow    print and return
EOF2
  common_help
}

parse_flags "--name --type --zone --project --node-count --node --worker --lines --no-follow" "$@"
require_name
resolve_type_defaults
check_node_count
[[ $WORKER =~ ^([0-9]+|all)$ ]] || die "--worker $WORKER: expected a worker number (0, 1, ...) or all"
[[ $NODE == all ]] || { [[ $NODE =~ ^[0-9]+$ ]] && ((NODE < NODE_COUNT)); } ||
  die "--node $NODE: expected a slice number in [0, $NODE_COUNT) or all"
[[ $NODE != all ]] || ((!FOLLOW)) || die "--node all needs --no-follow (the logs would interleave)"
[[ $TAIL_LINES =~ ^[0-9]+$ ]] || die "--lines $TAIL_LINES: expected a number"
[[ $WORKER != all ]] || ((!FOLLOW)) || die "--worker all needs --no-follow (the logs would interleave)"
require_gcloud

log="$REMOTE_STATE/train.log"
if ((FOLLOW)); then
  tpu_ssh "$WORKER" "tail -n $TAIL_LINES -F $log" "$NODE"
else
  tpu_ssh "$WORKER" "echo \"== \$(hostname): $log\"; tail -n $TAIL_LINES $log" "$NODE"
fi
