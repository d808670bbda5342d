#!/usr/bin/env bash
# Installs gptjax on every worker of a TPU VM: the code, a venv with gptjax and jax[tpu].
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

usage() {
  cat <<'EOF2'
Usage: tools/tpu/install.sh --name NAME [--type TYPE] [--mount-bucket BUCKET] [options]

On every worker (--worker=all): puts the code in ~/gptjax, creates ~/gptjax/.venv (Python
--python, fetched by uv: TPU VM images ship 3.10) and installs gptjax (pip install -e .)
with jax[tpu]. Running it again updates the code and keeps the venv.

  --git-url URL          clone URL on the workers (at --git-ref) instead of copying this
                         checkout (its tracked and untracked-but-not-ignored files)
  --git-ref REF          branch, tag or commit for --git-url (default HEAD: the default branch)
  --python VERSION       Python for the venv (default 3.12; 3.11 works too)
  --mount-bucket BUCKET  mount gs://BUCKET at /gcs/BUCKET on every worker (Cloud Storage
                         FUSE): a workdir there, e.g. /gcs/BUCKET/runs/NAME, outlives the VM
                         and is shared by all hosts
EOF2
  common_help
}

parse_flags "--name --type --zone --project --node-count --git-url --git-ref --python --mount-bucket" "$@"
require_name
resolve_type_defaults
check_node_count
validate_install_flags
require_gcloud

echo "installing gptjax on every worker of $NAME ($(($(hosts_for_type) * NODE_COUNT)) host(s) for $(describe_slices))"
install_on_workers
echo "next: tools/tpu/start.sh --name $NAME --type $TYPE --zone $ZONE$(node_count_flag) --config CONFIG --workdir WORKDIR"
