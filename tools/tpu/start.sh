#!/usr/bin/env bash
# Starts `gptjax train` on every worker of a TPU VM, detached, one log file per worker.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

usage() {
  cat <<'EOF2'
Usage: tools/tpu/start.sh --name NAME --config CONFIG --workdir WORKDIR [--config.F=V ...]
                          [options] [-- more gptjax train arguments]

Runs the same `gptjax train --config CONFIG --workdir WORKDIR ...` on every worker
(--worker=all), under nohup/setsid so ssh returns at once, with its output appended to
~/gptjax-logs/train.log on each worker (tools/tpu/logs.sh shows it). On a multi-host slice
gptjax joins the workers into one JAX runtime by itself. After exit 75 (preempted,
checkpoint committed) the run is started again; it resumes from WORKDIR's checkpoints.
With --node-count N it runs on every worker of every slice (--node=all): the TPU runtime
gives their hosts the slice count and coordinator (MEGASCALE_* in the VM metadata), so
nothing more is set; the config's mesh.dcn_data x mesh.dcn_fsdp must be N.

  --config CONFIG     config file, relative to the repository root (configs/tpu_v5e_16.py)
  --workdir WORKDIR   where checkpoints and metrics go, the same path on every worker:
                      /gcs/BUCKET/runs/NAME (bucket mounted by install.sh --mount-bucket),
                      gs://BUCKET/... if the installed gptjax accepts it, or (one host only)
                      a local absolute path, lost with the VM
  --config.F=V        passed to gptjax train as is (e.g. --config.train.steps=1000)
EOF2
  common_help
  cat <<'EOF2'

Example:
  tools/tpu/start.sh --name gpt --type v5litepod-16 --config configs/tpu_v5e_16.py \
      --workdir /gcs/my-bucket/runs/llama-1b
EOF2
}

parse_flags "--name --type --zone --project --node-count --config --workdir" "$@"
require_name
resolve_type_defaults
check_node_count
validate_train_flags
require_gcloud

echo "starting on every worker of $NAME: gptjax train --config $CONFIG --workdir $WORKDIR"
start_on_workers
echo "watch: tools/tpu/logs.sh --name $NAME --type $TYPE --zone $ZONE$(node_count_flag)"
