#!/usr/bin/env bash
# Brings a preempted run back: recreates the TPU if it is gone, reinstalls, starts the same
# command. gptjax resumes from the workdir's latest committed checkpoint by itself.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

usage() {
  cat <<'EOF2'
Usage: tools/tpu/restart.sh --name NAME --config CONFIG --workdir WORKDIR [create, install
                            and start options] [--reinstall]

Give it the flags you created, installed and started with. It looks at the TPU:
  - gone, PREEMPTED, SUSPENDED, FAILED, ...: deletes what is left, creates it again (a
    queued resource waits for capacity), installs gptjax, starts the run;
  - being created or queued: waits for it, then installs and starts;
  - up (READY / ACTIVE): does nothing while the run is going on every worker; else kills
    what is left of it (one stopped process stalls the others) and starts it again
    (--reinstall: installs first);
  - anything else (DELETING, STOPPED, ...): stops and says so.
The restarted run resumes from WORKDIR's latest committed checkpoint, so WORKDIR must be on
a bucket (/gcs/BUCKET/... with --mount-bucket BUCKET, or gs://...) to outlive the TPU.
Safe to run from cron: it does nothing while the run is going.

create: --spot --queued --runtime-version V --service-account SA (see create.sh --help)
install: --git-url URL --git-ref REF --python V --mount-bucket BUCKET (see install.sh --help)
start: --config CONFIG --workdir WORKDIR --config.F=V ... (see start.sh --help)
  --reinstall   reinstall when the TPU survived (e.g. new code); refused while the run is
                going (stop.sh first, which saves a checkpoint)
EOF2
  common_help
  cat <<'EOF2'

Example (the v5e-16 spot slice of docs/tpu.md):
  tools/tpu/restart.sh --name gpt --type v5litepod-16 --queued --spot --mount-bucket my-bucket \
      --config configs/tpu_v5e_16.py --workdir /gcs/my-bucket/runs/llama-1b
EOF2
}

parse_flags "--name --type --zone --project --node-count --runtime-version --service-account --spot
  --queued --git-url --git-ref --python --mount-bucket --config --workdir --reinstall" "$@"
require_name
resolve_type_defaults
check_node_count queued
[[ -n $RUNTIME_VERSION ]] || die "--type $TYPE has no default runtime version here: give --runtime-version"
validate_install_flags
validate_train_flags
require_gcloud

kind=tpu-vm
((QUEUED)) && kind=queued-resources
if ((DRY_RUN)); then
  state=PREEMPTED
  ((QUEUED)) && state=SUSPENDED
  echo "+ gcloud compute tpus $kind describe $NAME --zone $ZONE (dry run: showing the path for a $state TPU)"
else
  state=$(tpu_state)
fi
echo "$NAME ($kind): $state"

recreated=0
case $state in
  READY | ACTIVE) ;;
  WAITING_FOR_RESOURCES | ACCEPTED | PROVISIONING | CREATING | STARTING | RESTARTING | REPAIRING)
    wait_until_ready
    recreated=1
    ;;
  MISSING | PREEMPTED | TERMINATED | SUSPENDED | FAILED)
    [[ $state == MISSING ]] || delete_tpu
    echo "creating $NAME: $(describe_type)"
    create_tpu
    ((QUEUED)) && wait_until_ready
    recreated=1
    ;;
  *) die "$NAME is $state: neither up nor gone; run again once it settles (tools/tpu/status.sh)" ;;
esac

if ((!recreated)); then
  # The TPU survived: find the workers whose run stopped (a crash, or a preemption signal
  # that the VMs outlived). One stopped process stalls the others, so restart them all.
  ssh_target all
  ssh_cmd=("${SSH_TARGET[@]}" --command "$(lines_to_command remote_status)")
  echo "+ $(join_quoted gcloud "${ssh_cmd[@]}")"
  if ((!DRY_RUN)); then
    [[ -n $PROJECT ]] && ssh_cmd+=(--project "$PROJECT")
    status=$("$GCLOUD" "${ssh_cmd[@]}")
    echo "$status"
    if [[ $status != *stopped* && $status == *running* ]]; then
      ((!REINSTALL)) || die "the run is going on every worker: stop it first (tools/tpu/stop.sh saves a checkpoint), then restart --reinstall"
      echo "the run is going on every worker: nothing to do"
      exit 0
    fi
  fi
  FORCE=1
  tpu_ssh all "$(lines_to_command remote_stop)"
fi
if ((recreated || REINSTALL)); then
  install_on_workers
fi
start_on_workers
