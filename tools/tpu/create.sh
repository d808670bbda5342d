#!/usr/bin/env bash
# Creates a Cloud TPU VM (slice), directly or as a queued resource, on-demand or spot.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

usage() {
  cat <<'EOF'
Usage: tools/tpu/create.sh --name NAME [--type TYPE] [--spot] [--queued] [options]

Creates a TPU VM of TYPE. With --queued it creates a queued resource instead, which waits for
capacity and then provisions the TPU (the way to get multi-host spot slices); this script
then waits until it is ACTIVE (--no-wait returns at once).

  --spot                 spot capacity: much cheaper, preemptible at any time (restart.sh
                         recreates it); without it the TPU is on-demand
  --queued               create a queued resource rather than the TPU directly
  --no-wait              with --queued: do not wait for ACTIVE
  --runtime-version V    TPU software version (default by --type, see below)
  --service-account SA   service account for the VMs (default: Compute Engine's default);
                         the VMs get the cloud-platform scope, so its IAM roles decide
                         access: give it write access to your checkpoint bucket
EOF
  common_help
  cat <<'EOF'

Example (a v5e-16 spot slice, queued until capacity frees up):
  tools/tpu/create.sh --name gpt --type v5litepod-16 --queued --spot
Two v5e-16 slices joined over DCN (nodes gpt-0 and gpt-1; configs/tpu_2x_v5e_16.py):
  tools/tpu/create.sh --name gpt --type v5litepod-16 --node-count 2 --queued --spot
EOF
}

parse_flags "--name --type --zone --project --node-count --runtime-version --service-account --spot --queued --no-wait" "$@"
require_name
resolve_type_defaults
check_node_count queued
[[ -n $RUNTIME_VERSION ]] || die "--type $TYPE has no default runtime version here: give --runtime-version"
((QUEUED || WAIT)) || die "--no-wait only applies with --queued"
require_gcloud

echo "creating $NAME: $(describe_type)"
create_tpu
((QUEUED && WAIT)) && wait_until_ready
echo "next: tools/tpu/install.sh --name $NAME --type $TYPE --zone $ZONE$(node_count_flag) [--mount-bucket BUCKET]"
