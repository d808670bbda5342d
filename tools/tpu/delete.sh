#!/usr/bin/env bash
# Deletes the TPU VM (or the queued resource and its TPU). Checkpoints on a bucket stay.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

usage() {
  cat <<'EOF2'
Usage: tools/tpu/delete.sh --name NAME [--queued] [--yes] [options]

Deletes the TPU, which stops its billing. Everything on the VMs' disks goes with it; a
workdir on a bucket (/gcs/BUCKET/... or gs://...) stays.

  --queued   NAME is a queued resource: delete it and its TPU (--force)
  --yes      do not ask for confirmation
EOF2
  common_help
}

parse_flags "--name --type --zone --project --node-count --queued --yes" "$@"
require_name
resolve_type_defaults
check_node_count queued
require_gcloud

quiet=()
((YES)) && quiet=(--quiet)
if ((QUEUED)); then
  gcloud_run compute tpus queued-resources delete "$NAME" --zone "$ZONE" --force ${quiet[@]+"${quiet[@]}"}
else
  gcloud_run compute tpus tpu-vm delete "$NAME" --zone "$ZONE" ${quiet[@]+"${quiet[@]}"}
fi
