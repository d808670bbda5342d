"""How long a checkpoint save blocks the training loop, for a config's full train state.

Usage:  python tools/bench_checkpoint.py --config configs/gpt2_124m.py [--saves 3] [--json]
            [--workdir DIR_OR_GS_URL]

Builds the config's train state (parameters + AdamW moments, float32) directly sharded on
this host's devices, then saves it `--saves` times through gptjax's Checkpointer (async, as
in training) and reports, per save, the seconds the caller was blocked (fingerprints + copy to
host) and the seconds until the checkpoint committed, then restores the last one `--saves`
times (seconds until the state is back on the devices, fingerprints verified). Medians and
min/max are printed. `--workdir gs://...` times a bucket; with tools/gcs_emulator.py, a local
Cloud Storage emulator (see docs/benchmarks.md).
"""

from __future__ import annotations

import argparse
import functools
import json
import statistics
import sys
import tempfile
import time


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", required=True, help="config file, e.g. configs/gpt2_124m.py")
    parser.add_argument("--saves", type=int, default=3, help="saves to time (default 3)")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--workdir", help="where to save (default: a temporary directory)")
    args = parser.parse_args()

    import jax
    from flax.core import spmd as flax_spmd

    from gptjax import sharding
    from gptjax.checkpoint import Checkpointer
    from gptjax.config import load_config_file, model_config
    from gptjax.model import count_params
    from gptjax.optim import make_optimizer
    from gptjax.steps import new_train_state

    config = load_config_file(args.config)
    model = model_config(config)
    mesh = sharding.make_mesh({"data": 1, "fsdp": -1, "tensor": 1})
    rules = tuple(config.sharding_rules)
    tx, _ = make_optimizer(config.optim, config.train.steps)
    create = functools.partial(new_train_state, model, tx, 0)
    with jax.set_mesh(mesh), flax_spmd.logical_axis_rules(rules):
        state, _ = sharding.sharded_init(create, mesh, rules)
    jax.block_until_ready(state)
    state_bytes = sum(x.nbytes for x in jax.tree.leaves(state))
    blocked, committed, restored = [], [], []
    with tempfile.TemporaryDirectory() as scratch:
        checkpointer = Checkpointer(args.workdir or scratch, keep_last=1)
        for i in range(args.saves):
            state = state.replace(step=state.step + 1)
            start = time.perf_counter()
            blocked.append(checkpointer.save(state, {"bench": i}, b""))
            checkpointer.wait()
            committed.append(time.perf_counter() - start)
        for _ in range(args.saves):
            start = time.perf_counter()
            jax.block_until_ready(checkpointer.restore(int(state.step), state))
            restored.append(time.perf_counter() - start)
        checkpointer.close()
    result = {
        "config": args.config,
        "workdir": args.workdir or "local temporary directory",
        "parameters": count_params(model),
        "state_gb": state_bytes / 1e9,
        "devices": jax.device_count(),
        "blocked_sec_median": statistics.median(blocked),
        "blocked_sec_min_max": [min(blocked), max(blocked)],
        "commit_sec_median": statistics.median(committed),
        "commit_sec_min_max": [min(committed), max(committed)],
        "restore_sec_median": statistics.median(restored),
        "restore_sec_min_max": [min(restored), max(restored)],
    }
    print(json.dumps(result) if args.json else "\n".join(f"{k}: {v}" for k, v in result.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
