#!/usr/bin/env bash
# Says whether the TPU exists (its state) and whether the run is going on each worker.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

usage() {
  cat <<'EOF2'
Usage: tools/tpu/status.sh --name NAME [--queued] [options]

Prints the TPU's state (READY, PREEMPTED, ... or for --queued the queued resource's
ACTIVE, SUSPENDED, WAITING_FOR_RESOURCES, ...) and, when it is up, "running" or "stopped
(last exit code: N)" for each worker. Exit codes: 0 done, 75 preempted (restart resumes).

  --queued   NAME is a queued resource (created with create.sh --queued)
EOF2
  common_help
}

parse_flags "--name --type --zone --project --node-count --queued" "$@"
require_name
resolve_type_defaults
check_node_count queued
require_gcloud

if ((DRY_RUN)); then
  kind=tpu-vm
  ((QUEUED)) && kind=queued-resources
  echo "+ gcloud compute tpus $kind describe $NAME --zone $ZONE --format=value(state...)"
  state=READY
else
  state=$(tpu_state)
fi
echo "$NAME: $state"
case $state in
  READY | ACTIVE) tpu_ssh all "$(lines_to_command remote_status)" ;;
  *) echo "the run is not going: tools/tpu/restart.sh recreates the TPU and resumes it" ;;
esac
