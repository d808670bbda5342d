#!/usr/bin/env bash
# The first-hour smoke run, ON a single-host TPU VM (v4-8, v5litepod-8) after install.sh: a
# thin wrapper around tools/tpu_smoke.py, which does the work and documents the checks.
set -euo pipefail

usage() {
  cat <<'EOF2'
Usage: tools/tpu/smoke.sh [--config CONFIG] [--out DIR] [--steps N] [--config.F=V ...] [--dry-run]

Run on the TPU VM itself, in ~/gptjax (install.sh put it there), e.g. through
`gcloud compute tpus tpu-vm ssh NAME --zone ZONE --worker=0 --command '...'` (docs/tpu.md,
"First hour on a TPU"). One process at a time holds the TPU: stop any training first.

Measures, each in its own process: xla against splash attention and bfloat16 against
float32 (loss agreement, tokens/s, MFU, compile time), the peak HBM of each against the
`gptjax train --dry-run` plan, and SIGTERM -> exit 75 -> resume, bitwise against an
uninterrupted run. Writes everything to DIR/result.json (its path is the last line printed)
and a human summary to DIR/summary.txt. An estimated 15-30 minutes on a v4-8 (not yet timed).

  --config CONFIG  config file (default configs/tpu_v4_8.py; a v5litepod-8 needs a mesh of
                   8 devices: add --config.mesh.fsdp=-1)
  --out DIR        where result.json, summary.txt, logs/ and the run workdirs go
                   (default ~/gptjax-smoke)
  --steps N        timed steps per variant, after 3 warm-up steps (default 10); the resume
                   runs take max(N, 24) steps
  --config.F=V     override a config field in every run (as for gptjax train)
  --dry-run        validate the config and print every command, run none (no TPU needed)
  --help           this text
Environment: PYTHON (default ./.venv/bin/python, the venv install.sh made).
Exit codes: 0 every check passed, 1 a check failed or a run crashed (see result.json),
2 usage or config error (before anything runs).
EOF2
}

die() {
  echo "smoke.sh: error: $*" >&2
  exit 2
}

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
ARGS=()
while (($#)); do
  case $1 in
    -h | --help) usage; exit 0 ;;
    --dry-run) ARGS+=(--dry-run) ;;
    --config.*=*) ARGS+=("$1") ;;
    --config.*) die "$1: expected --config.FIELD=VALUE" ;;
    --config | --out | --steps)
      (($# >= 2)) && [[ -n $2 && $2 != -* ]] || die "$1 needs a value"
      [[ $1 != --steps || $2 =~ ^[1-9][0-9]*$ ]] || die "--steps $2: expected a positive integer"
      ARGS+=("$1" "$2")
      shift ;;
    --config=* | --out=* | --steps=*) die "${1%%=*} takes its value after a space: ${1%%=*} ${1#*=}" ;;
    *) die "unknown argument: $1 (see --help)" ;;
  esac
  shift
done

PYTHON=${PYTHON:-$ROOT/.venv/bin/python}
[[ -x $PYTHON ]] || command -v "$PYTHON" >/dev/null 2>&1 ||
  die "no Python at $PYTHON: run tools/tpu/install.sh first, or set PYTHON"
# The driver resolves --config against this directory and runs everything from $ROOT.
echo "+ $PYTHON $ROOT/tools/tpu_smoke.py$(printf ' %q' ${ARGS[@]+"${ARGS[@]}"})"
exec "$PYTHON" "$ROOT/tools/tpu_smoke.py" ${ARGS[@]+"${ARGS[@]}"}
