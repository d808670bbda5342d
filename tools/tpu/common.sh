#!/usr/bin/env bash
# Shared by tools/tpu/*.sh (sourced, never run): flags, defaults per TPU generation, the
# dry-run aware command runner and the commands each script sends to the TPU workers.
# Avoids bash-4-only features (associative arrays, mapfile; empty arrays are guarded for
# set -u) so that macOS's bash 3.2 can run it; tested with bash 5.2.
# SC2016/SC2088: text for the workers, where their shell expands $... and ~ (not ours);
# SC2034: flag variables are read by the scripts that source this file.
# shellcheck disable=SC2016,SC2034,SC2088

TPU_TOOLS_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO_ROOT=$(cd "$TPU_TOOLS_DIR/../.." && pwd)
GCLOUD=${GCLOUD:-gcloud}           # the gcloud binary that runs (printed commands say gcloud)
POLL_SECONDS=${TPU_POLL_SECONDS:-30}
# Where things live on every worker.
REMOTE_REPO='~/gptjax'
REMOTE_STATE='~/gptjax-logs'        # train.log, loop.pid, train.pid, exit_code, stop
REMOTE_TARBALL='~/gptjax-src.tar.gz'
BUCKET_MOUNT_ROOT=/gcs              # --mount-bucket B mounts gs://B at /gcs/B

NAME=${TPU_NAME:-}
TYPE=${TPU_TYPE:-v4-8}
ZONE=${TPU_ZONE:-}
PROJECT=${TPU_PROJECT:-}
RUNTIME_VERSION=""
SERVICE_ACCOUNT=""
SPOT=0
QUEUED=0
NODE_COUNT=1                        # TPU slices (nodes) of a multislice queued resource
WAIT=1
DRY_RUN=0
GIT_URL=""
GIT_REF=HEAD
PYTHON_VERSION=3.12
MOUNT_BUCKET=""
CONFIG=""
WORKDIR=""
WORKER=0
NODE=0
TAIL_LINES=100
FOLLOW=1
FORCE=0
REINSTALL=0
YES=0
TRAIN_ARGS=()

die() {
  echo "$(basename "$0"): error: $*" >&2
  exit 2
}

# One word quoted for a POSIX shell, only when it needs it (readable dry-run output).
q() {
  case $1 in
    '') printf "''" ;;
    *[!A-Za-z0-9_@%+=:,./-]*) printf "'%s'" "$(printf '%s' "$1" | sed "s/'/'\\\\''/g")" ;;
    *) printf '%s' "$1" ;;
  esac
}

join_quoted() {
  local out="" word
  for word in "$@"; do out+="${out:+ }$(q "$word")"; done
  printf '%s' "$out"
}

# Prints the command, then runs it unless --dry-run. A leading "gcloud" runs as $GCLOUD.
run() {
  echo "+ $(join_quoted "$@")"
  ((DRY_RUN)) && return 0
  if [[ $1 == gcloud ]]; then
    shift
    "$GCLOUD" "$@"
  else
    "$@"
  fi
}

# gcloud with the project flag appended when --project was given.
gcloud_run() {
  if [[ -n $PROJECT ]]; then run gcloud "$@" --project "$PROJECT"; else run gcloud "$@"; fi
}

require_gcloud() {
  ((DRY_RUN)) && return 0
  command -v "$GCLOUD" >/dev/null 2>&1 ||
    die "$GCLOUD not found: install the Google Cloud CLI (https://cloud.google.com/sdk/docs/install)"
}

flag_takes_value() {
  case $1 in
    --spot | --queued | --no-wait | --dry-run | --no-follow | --force | --reinstall | --yes) return 1 ;;
    *) return 0 ;;
  esac
}

set_flag() {
  case $1 in
    --name) NAME=$2 ;;
    --type) TYPE=$2 ;;
    --zone) ZONE=$2 ;;
    --project) PROJECT=$2 ;;
    --runtime-version) RUNTIME_VERSION=$2 ;;
    --service-account) SERVICE_ACCOUNT=$2 ;;
    --spot) SPOT=1 ;;
    --queued) QUEUED=1 ;;
    --no-wait) WAIT=0 ;;
    --dry-run) DRY_RUN=1 ;;
    --git-url) GIT_URL=$2 ;;
    --git-ref) GIT_REF=$2 ;;
    --python) PYTHON_VERSION=$2 ;;
    --mount-bucket) MOUNT_BUCKET=$2 ;;
    --config) CONFIG=$2 ;;
    --workdir) WORKDIR=$2 ;;
    --worker) WORKER=$2 ;;
    --node) NODE=$2 ;;
    --node-count) NODE_COUNT=$2 ;;
    --lines) TAIL_LINES=$2 ;;
    --no-follow) FOLLOW=0 ;;
    --force) FORCE=1 ;;
    --reinstall) REINSTALL=1 ;;
    --yes) YES=1 ;;
  esac
}

# parse_flags "ALLOWED FLAGS" "$@": every flag must be in ALLOWED; `--flag value` and
# `--flag=value` both work. With --config in ALLOWED, `--config.a.b=v` and everything after
# `--` are kept in TRAIN_ARGS for `gptjax train`.
parse_flags() {
  local allowed=" ${1//$'\n'/ } --help --dry-run " arg flag value inline
  shift
  while (($#)); do
    arg=$1
    case $arg in
      -h | --help)
        usage
        exit 0
        ;;
      --)
        [[ $allowed == *" --config "* ]] || die "unexpected argument: -- (see --help)"
        shift
        TRAIN_ARGS+=("$@")
        break
        ;;
      --config.*)
        [[ $allowed == *" --config "* ]] || die "unknown flag: ${arg%%=*} (see --help)"
        [[ $arg == *=* ]] || die "$arg: expected --config.FIELD=VALUE"
        TRAIN_ARGS+=("$arg")
        shift
        continue
        ;;
      --*=*) flag=${arg%%=*} value=${arg#*=} inline=1 ;;
      --*) flag=$arg value="" inline=0 ;;
      *) die "unexpected argument: $arg (see --help)" ;;
    esac
    [[ $allowed == *" $flag "* ]] || die "unknown flag: $flag (see --help)"
    if flag_takes_value "$flag"; then
      if ((!inline)); then
        (($# >= 2)) || die "$flag needs a value"
        value=$2
        shift
      fi
      [[ -n $value && $value != -* ]] || die "$flag needs a value, got '${value}'"
      set_flag "$flag" "$value"
    else
      ((!inline)) || die "$flag takes no value"
      set_flag "$flag"
    fi
    shift
  done
}

require_name() {
  [[ -n $NAME ]] || die "missing --name (the TPU's name; or set TPU_NAME)"
  [[ $NAME =~ ^[a-z]([-a-z0-9]{0,61}[a-z0-9])?$ ]] ||
    die "--name $NAME: use lowercase letters, digits and hyphens, starting with a letter"
}

# Sets ZONE and RUNTIME_VERSION from TYPE where not given (cloud.google.com/tpu/docs/regions-zones,
# cloud.google.com/tpu/docs/runtimes).
resolve_type_defaults() {
  local zone version
  case $TYPE in
    v5e-*) die "--type $TYPE: Cloud TPU calls v5e slices ${TYPE/v5e-/v5litepod-}" ;;
    v4-[0-9]*) zone=us-central2-b version=tpu-ubuntu2204-base ;;
    v5litepod-[0-9]*) zone=us-west4-a version=v2-alpha-tpuv5-lite ;;
    v5p-[0-9]*) zone=us-east5-a version=v2-alpha-tpuv5 ;;
    v6e-[0-9]*) zone=us-east5-b version=v2-alpha-tpuv6e ;;
    v[0-9]*-[0-9]*) zone="" version="" ;;
    *) die "--type $TYPE: expected an accelerator type such as v4-8, v5litepod-16 or v5p-32" ;;
  esac
  [[ ${TYPE##*-} =~ ^[0-9]+$ ]] || die "--type $TYPE: expected an accelerator type such as v4-8"
  ZONE=${ZONE:-$zone}
  RUNTIME_VERSION=${RUNTIME_VERSION:-$version}
  [[ -n $ZONE ]] || die "--type $TYPE has no default zone here: give --zone"
  [[ $ZONE =~ ^[a-z]+-[a-z]+[0-9]+-[a-z0-9]+$ ]] || die "--zone $ZONE: expected a zone such as us-west4-a"
}

# --node-count N: N slices joined over the data-center network (multislice), which only a
# queued resource provisions; scripts that create or describe the TPU pass "queued" to
# require --queued. gptjax's mesh.dcn_data x mesh.dcn_fsdp must equal N.
check_node_count() {
  [[ $NODE_COUNT =~ ^[1-9][0-9]*$ ]] || die "--node-count $NODE_COUNT: expected a number of slices (1, 2, ...)"
  if [[ ${1:-} == queued ]] && ((NODE_COUNT > 1 && !QUEUED)); then
    die "--node-count $NODE_COUNT: a multislice TPU is a queued resource; add --queued"
  fi
}

# Hosts (TPU VM workers) of a slice: 4 chips per host past one host's worth; v2-v4 and v5p
# names count TensorCores (2 per chip), v5e and v6e names count chips (up to 8 on one host).
hosts_for_type() {
  local n=${TYPE##*-} chips
  case $TYPE in
    v2-* | v3-* | v4-* | v5p-*) chips=$((n / 2)) ;;
    *) chips=$n ;;
  esac
  if ((chips <= 8)) && [[ $TYPE == v5litepod-* || $TYPE == v6e-* ]]; then echo 1; else echo $(((chips + 3) / 4)); fi
}

# SSH_TARGET: gcloud's words for worker $1 (a number or all) of node $2 (default all): the
# nodes of a multislice TPU are reached through their queued resource (--node), a single TPU
# VM by its name.
ssh_target() {
  if ((NODE_COUNT > 1)); then
    SSH_TARGET=(compute tpus queued-resources ssh "$NAME" --zone "$ZONE" "--node=${2:-all}" "--worker=$1")
  else
    SSH_TARGET=(compute tpus tpu-vm ssh "$NAME" --zone "$ZONE" "--worker=$1")
  fi
}

tpu_ssh() { # tpu_ssh WORKER REMOTE_COMMAND [NODE]
  ssh_target "$1" "${3:-all}"
  gcloud_run "${SSH_TARGET[@]}" --command "$2"
}

# The TPU's state: READY/PREEMPTED/... for a TPU VM, ACTIVE/SUSPENDED/... for a queued
# resource, MISSING when it does not exist. Any other gcloud failure stops the script.
tpu_state() {
  local out kind format
  if ((QUEUED)); then kind=queued-resources format='value(state.state)'; else kind=tpu-vm format='value(state)'; fi
  local -a cmd=(compute tpus "$kind" describe "$NAME" --zone "$ZONE" "--format=$format")
  [[ -n $PROJECT ]] && cmd+=(--project "$PROJECT")
  if out=$("$GCLOUD" "${cmd[@]}" 2>&1); then
    echo "${out:-UNKNOWN}"
  elif [[ $out == *NOT_FOUND* || $out == *"not found"* ]]; then
    echo MISSING
  else
    die "gcloud ${cmd[*]} failed: $(echo "$out" | tail -n 1)"
  fi
}

# Polls until a queued resource is ACTIVE (or a TPU VM READY).
wait_until_ready() {
  local want=READY kind=tpu-vm
  ((QUEUED)) && want=ACTIVE kind=queued-resources
  if ((DRY_RUN)); then
    echo "+ gcloud compute tpus $kind describe $(q "$NAME") --zone $ZONE ... (every ${POLL_SECONDS}s until $want)"
    return 0
  fi
  local state
  while :; do
    state=$(tpu_state)
    case $state in
      "$want") return 0 ;;
      FAILED | SUSPENDED | PREEMPTED | TERMINATED | MISSING) die "$NAME is $state, not $want" ;;
    esac
    echo "$NAME: $state; waiting for $want (checking every ${POLL_SECONDS}s)"
    sleep "$POLL_SECONDS"
  done
}

# --- what runs on the workers -------------------------------------------------------------

remote_mount_bucket() { # gcsfuse on each worker; checkpoints written there outlive the VM
  local bucket=$1 dir="$BUCKET_MOUNT_ROOT/$1"
  printf '%s\n' \
    'if ! command -v gcsfuse >/dev/null; then' \
    '  echo "deb [signed-by=/usr/share/keyrings/cloud.google.asc] https://packages.cloud.google.com/apt gcsfuse-$(lsb_release -c -s) main" | sudo tee /etc/apt/sources.list.d/gcsfuse.list >/dev/null' \
    '  curl -fsSL https://packages.cloud.google.com/apt/doc/apt-key.gpg | sudo tee /usr/share/keyrings/cloud.google.asc >/dev/null' \
    '  sudo apt-get update -qq && sudo apt-get install -y -qq gcsfuse' \
    'fi' \
    "sudo mkdir -p $dir && sudo chown \"\$(id -u):\$(id -g)\" $dir" \
    "mountpoint -q $dir || gcsfuse --implicit-dirs --rename-dir-limit=200000 $bucket $dir"
}

remote_install() { # the whole install, one worker's view
  echo 'set -euo pipefail'
  [[ -n $MOUNT_BUCKET ]] && remote_mount_bucket "$MOUNT_BUCKET"
  echo "mkdir -p $REMOTE_REPO && cd $REMOTE_REPO"
  if [[ -n $GIT_URL ]]; then
    echo "git init -q . && git fetch -q --depth 1 $(q "$GIT_URL") $(q "$GIT_REF")"
    echo 'git checkout -q --force FETCH_HEAD && git clean -q -fdx -e .venv'
  else
    echo 'find . -mindepth 1 -maxdepth 1 ! -name .venv -exec rm -rf {} +'
    echo "tar -xzf $REMOTE_TARBALL && rm $REMOTE_TARBALL"
  fi
  # uv fetches a standalone Python: TPU VM images ship Python 3.10, gptjax needs >= 3.11.
  echo 'export PATH="$HOME/.local/bin:$PATH"'
  echo 'command -v uv >/dev/null || PIP_BREAK_SYSTEM_PACKAGES=1 python3 -m pip install -q --user uv'
  echo "uv venv -q --allow-existing --python $(q "$PYTHON_VERSION") .venv"
  echo 'uv pip install -q --python .venv/bin/python -e . "jax[tpu]"'
  echo '.venv/bin/gptjax --help >/dev/null && echo "gptjax installed on $(hostname)"'
}

remote_running_check() { # exit 0 if this worker's run loop is alive (not just a stale pid)
  echo "grep -qs worker_loop \"/proc/\$(cat $REMOTE_STATE/loop.pid 2>/dev/null || echo none)/cmdline\""
}

remote_start() { # starts `gptjax train` detached (nohup + setsid): ssh returns at once
  local -a train=(.venv/bin/gptjax train --config "$CONFIG" --workdir "$WORKDIR")
  train+=(${TRAIN_ARGS[@]+"${TRAIN_ARGS[@]}"})
  echo 'set -euo pipefail'
  echo "cd $REMOTE_REPO && mkdir -p $REMOTE_STATE"
  echo "if $(remote_running_check); then"
  echo "  echo \"a run is already going on \$(hostname); stop it first (tools/tpu/stop.sh)\" >&2; exit 3"
  echo 'fi'
  if [[ $WORKDIR == "$BUCKET_MOUNT_ROOT"/* ]]; then # a missing mount would mean a local workdir
    local mount
    mount=$BUCKET_MOUNT_ROOT/$(echo "${WORKDIR#"$BUCKET_MOUNT_ROOT"/}" | cut -d/ -f1)
    echo "mountpoint -q $(q "$mount") || {"
    echo "  echo \"$mount is not a mounted bucket on \$(hostname): run tools/tpu/install.sh --mount-bucket ${mount##*/}\" >&2; exit 2; }"
  fi
  if [[ $WORKDIR == gs://* ]]; then
    # gptjax before gs:// support wrapped --workdir in pathlib.Path, turning gs://b/x into
    # ./gs:/b/x on the VM's disk (lost with the VM): refuse such an install, don't train into it.
    echo ".venv/bin/python -c 'import sys; from gptjax.checkpoint import checkpoint_dir; sys.exit(not str(checkpoint_dir(sys.argv[1])).startswith(\"gs://\"))' $(q "$WORKDIR") || {"
    echo "  echo \"this gptjax writes --workdir gs://... to a local directory (an install older than gs:// support): run tools/tpu/install.sh again\" >&2; exit 2; }"
  fi
  echo "nohup setsid bash tools/tpu/worker_loop.sh $REMOTE_STATE -- $(join_quoted "${train[@]}") >>$REMOTE_STATE/train.log 2>&1 </dev/null &"
  echo "echo \"started on \$(hostname); log: $REMOTE_STATE/train.log\""
}

remote_status() {
  echo "if $(remote_running_check); then echo \"\$(hostname): running\";"
  echo "else echo \"\$(hostname): stopped (last exit code: \$(cat $REMOTE_STATE/exit_code 2>/dev/null || echo none))\"; fi"
}

remote_stop() {
  echo "mkdir -p $REMOTE_STATE && touch $REMOTE_STATE/stop"
  if ((FORCE)); then # the loop leads its own process group (setsid): kill all of it
    echo "if $(remote_running_check); then"
    echo "  kill -KILL -- \"-\$(cat $REMOTE_STATE/loop.pid)\" && echo \"\$(hostname): killed the run\""
    echo "else echo \"\$(hostname): no run\"; fi"
    echo "rm -f $REMOTE_STATE/loop.pid $REMOTE_STATE/train.pid"
  else # SIGTERM: gptjax saves a checkpoint at the next step and exits 75; the loop then stops
    echo "pid=\$(cat $REMOTE_STATE/train.pid 2>/dev/null || echo none)"
    echo "if grep -qs gptjax \"/proc/\$pid/cmdline\"; then"
    echo "  kill -TERM \"\$pid\" && echo \"\$(hostname): SIGTERM sent to gptjax train (pid \$pid)\""
    echo "else echo \"\$(hostname): no run\"; fi"
  fi
}

# Joins remote command lines with newlines: gcloud passes --command to the worker's bash.
lines_to_command() { "$@" | sed -e '/^$/d'; }

validate_train_flags() {
  [[ -n $CONFIG ]] || die "missing --config (a config file, relative to the repository root)"
  [[ $CONFIG != /* && $CONFIG != \~* ]] ||
    die "--config $CONFIG: give the path relative to the repository root (e.g. configs/tpu_v5e_16.py)"
  [[ -n $GIT_URL || -f $REPO_ROOT/$CONFIG ]] || die "--config $CONFIG: no such file in $REPO_ROOT"
  [[ -n $WORKDIR ]] || die "missing --workdir (gs://BUCKET/... or an absolute path such as $BUCKET_MOUNT_ROOT/BUCKET/runs/NAME)"
  [[ $WORKDIR == /* || $WORKDIR == gs://?* ]] ||
    die "--workdir $WORKDIR: give gs://BUCKET/... or an absolute path (the same on every worker)"
  if [[ $WORKDIR != gs://* && $WORKDIR != "$BUCKET_MOUNT_ROOT"/* ]]; then
    local hosts=$(($(hosts_for_type) * NODE_COUNT))
    ((hosts == 1)) ||
      die "--workdir $WORKDIR is on each VM's own disk, but $(describe_slices) has $hosts hosts that must share one workdir: use $BUCKET_MOUNT_ROOT/BUCKET/... (install with --mount-bucket)"
    echo "warning: --workdir $WORKDIR is on the VM's disk: its checkpoints are lost if the TPU is deleted" >&2
  fi
}

validate_install_flags() {
  [[ -z $MOUNT_BUCKET || $MOUNT_BUCKET =~ ^[a-z0-9][-a-z0-9_.]{1,61}[a-z0-9]$ ]] ||
    die "--mount-bucket $MOUNT_BUCKET: expected a bucket name (3-63 of a-z 0-9 - _ .), without gs://"
  [[ $PYTHON_VERSION =~ ^3\.[0-9]+$ ]] || die "--python $PYTHON_VERSION: expected 3.11, 3.12, ..."
  if [[ -z $GIT_URL ]]; then
    git -C "$REPO_ROOT" rev-parse --git-dir >/dev/null 2>&1 ||
      die "$REPO_ROOT is not a git checkout: give --git-url URL to clone on the workers"
  fi
}

# Copies this checkout (tracked and untracked-but-not-ignored files) to every worker, or
# nothing with --git-url; then installs gptjax and jax[tpu] into ~/gptjax/.venv on each.
install_on_workers() {
  if [[ -z $GIT_URL ]]; then
    local tmp=${TMPDIR:-/tmp}/gptjax-src.XXXXXX
    ((DRY_RUN)) || tmp=$(mktemp -d "${TMPDIR:-/tmp}/gptjax-src.XXXXXX")
    local tarball=$tmp/gptjax-src.tar.gz
    echo "+ git -C $(q "$REPO_ROOT") ls-files -z --cached --others --exclude-standard | tar -C $(q "$REPO_ROOT") --null -T - -czf $(q "$tarball")"
    if ((!DRY_RUN)); then
      git -C "$REPO_ROOT" ls-files -z --cached --others --exclude-standard |
        tar -C "$REPO_ROOT" --null -T - -czf "$tarball"
    fi
    if ((NODE_COUNT > 1)); then
      gcloud_run compute tpus queued-resources scp "$tarball" "$NAME:$REMOTE_TARBALL" --zone "$ZONE" --node=all --worker=all
    else
      gcloud_run compute tpus tpu-vm scp "$tarball" "$NAME:$REMOTE_TARBALL" --zone "$ZONE" --worker=all
    fi
    ((DRY_RUN)) || rm -rf "$tmp"
  fi
  tpu_ssh all "$(lines_to_command remote_install)"
}

start_on_workers() {
  tpu_ssh all "$(lines_to_command remote_start)"
}

create_tpu() {
  local -a cmd
  if ((QUEUED)); then
    cmd=(compute tpus queued-resources create "$NAME")
    # Multislice: nodes NAME-0 .. NAME-(N-1), one slice of TYPE each; the runtime tells their
    # hosts the slice count and coordinator (MEGASCALE_* in the VM metadata), which JAX reads.
    if ((NODE_COUNT > 1)); then cmd+=(--node-count "$NODE_COUNT" --node-prefix "$NAME"); else cmd+=(--node-id "$NAME"); fi
    cmd+=(--zone "$ZONE" --accelerator-type "$TYPE" --runtime-version "$RUNTIME_VERSION")
  else
    cmd=(compute tpus tpu-vm create "$NAME" --zone "$ZONE" --accelerator-type "$TYPE"
      --version "$RUNTIME_VERSION")
  fi
  # Access is then decided by the service account's IAM roles (the bucket needs write).
  cmd+=(--scopes https://www.googleapis.com/auth/cloud-platform)
  [[ -n $SERVICE_ACCOUNT ]] && cmd+=(--service-account "$SERVICE_ACCOUNT")
  ((SPOT)) && cmd+=(--spot)
  gcloud_run "${cmd[@]}"
}

delete_tpu() { # quiet: for restart, whose TPU is already gone or broken
  if ((QUEUED)); then
    gcloud_run compute tpus queued-resources delete "$NAME" --zone "$ZONE" --force --quiet
  else
    gcloud_run compute tpus tpu-vm delete "$NAME" --zone "$ZONE" --quiet
  fi
}

node_count_flag() { # " --node-count N" for the next command a script suggests, if N > 1
  ((NODE_COUNT > 1)) && printf ' --node-count %s' "$NODE_COUNT"
  return 0
}

describe_slices() { # v5litepod-16, or 2 x v5litepod-16
  if ((NODE_COUNT > 1)); then echo "$NODE_COUNT x $TYPE"; else echo "$TYPE"; fi
}

describe_type() {
  echo "$(describe_slices) in $ZONE: $(($(hosts_for_type) * NODE_COUNT)) host(s), runtime ${RUNTIME_VERSION:-?}$( ((SPOT)) && echo ', spot')$( ((QUEUED)) && echo ', queued resource')"
}

# Help text for the flags every script takes.
common_help() {
  cat <<'HELP'
TPU:
  --name NAME         the TPU's name (queued resources use it for the node too); env TPU_NAME
  --type TYPE         accelerator type (default v4-8; env TPU_TYPE): v4-8, v5litepod-16,
                      v5p-32, v6e-8, ... It picks the default zone and runtime version:
                        v4-*         us-central2-b  tpu-ubuntu2204-base
                        v5litepod-*  us-west4-a     v2-alpha-tpuv5-lite
                        v5p-*        us-east5-a     v2-alpha-tpuv5
                        v6e-*        us-east5-b     v2-alpha-tpuv6e
  --zone ZONE         override the zone (env TPU_ZONE)
  --node-count N      N slices of TYPE in one multislice queued resource (default 1;
                      needs --queued where the TPU is created); the config's
                      mesh.dcn_data x mesh.dcn_fsdp must be N
  --project PROJECT   GCP project (default: gcloud's configured project; env TPU_PROJECT)
  --dry-run           print every command (gcloud, ssh) without running any; needs no gcloud
  --help              this text
Environment: GCLOUD (the gcloud binary, default gcloud), TPU_POLL_SECONDS (default 30).
HELP
}
