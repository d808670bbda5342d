#!/usr/bin/env bash
# Stops the run on every worker: SIGTERM, so gptjax saves a checkpoint first (exit 75).
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

usage() {
  cat <<'EOF2'
Usage: tools/tpu/stop.sh --name NAME [--force] [options]

Sends SIGTERM to `gptjax train` on every worker: it saves a checkpoint at the next step,
waits for the commit and exits 75, and the run is not started again. start.sh or
restart.sh later resumes from that checkpoint. The TPU keeps running (and billing):
delete.sh removes it.

  --force   SIGKILL the run and its restart loop at once (a hung run); the progress since
            the last committed checkpoint is lost
EOF2
  common_help
}

parse_flags "--name --type --zone --project --node-count --force" "$@"
require_name
resolve_type_defaults
check_node_count
require_gcloud

tpu_ssh all "$(lines_to_command remote_stop)"
