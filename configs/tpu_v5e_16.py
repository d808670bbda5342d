"""Llama-style 1B on a TPU v5e-16 (v5litepod-16): configs/llama_1b.py with that slice's mesh.

Run:    gptjax train --config configs/tpu_v5e_16.py --workdir /gcs/BUCKET/runs/llama-1b
        on all 4 workers at once; tools/tpu/start.sh --type v5litepod-16 --config
        configs/tpu_v5e_16.py ... runs exactly this there (the walk-through in docs/tpu.md).
Slice:  v5litepod-16 = 16 TPU v5e chips (16 GB HBM, 1 TensorCore each) on 4 hosts (TPU VMs)
        of 4 chips: JAX sees 16 devices in 4 processes, 4 local devices each
        (cloud.google.com/tpu/docs/v5e: 4x4 topology, VMs of 1, 4 or 8 chips; Google's xpk
        table: v5litepod-16 = 4 VMs of ct5lp-hightpu-4t, 4 chips each).
Mesh:   `data` and `fsdp` may span hosts, `tensor` stays inside one host (at most its 4 local
        devices), since its collectives run inside every matmul. All 16 chips are one slice
        joined by ICI, so fsdp=16 shards the 1.1B model's 18 GB of float32 parameters and
        AdamW state to 1.1 GB per chip, leaving the rest of the 16 GB for activations.
Batch:  512 rows of 2048 tokens (1M tokens) per update, 128 rows per host; 8 micro-batches of
        64 rows = 4 rows per chip, as llama_1b on 8 chips.
Params: 1,107,363,840, as configs/llama_1b.py (everything but the fields set below is that file's).
Kernels: model.dtype="bfloat16" and model.attention="xla" (set below) are unmeasured on TPU:
        tools/tpu/smoke.sh decides them (docs/tpu.md, "First hour on a TPU").
Reaches: not measured yet (no loss, time, memory or throughput figure has been taken).
        The built-in corpus is only a smoke test for a 1.1B model: prepare a real corpus
        (docs/tpu.md, `gptjax prepare`) and add --config.data.source=prepared
        --config.data.prepared_dir=DIR.
"""

from pathlib import Path

import ml_collections

from gptjax.config import load_config_file


def get_config() -> ml_collections.ConfigDict:
    config = load_config_file(Path(__file__).with_name("llama_1b.py"))

    # Unmeasured on TPU: bfloat16 (the usual TPU compute dtype) and the XLA attention (runs
    # anywhere) stay until tools/tpu/smoke.sh, splash vs xla and bfloat16 vs float32 on this
    # hardware, decides them.
    config.model.dtype = "bfloat16"  # compute dtype; parameters and optimizer stay float32
    config.model.attention = "xla"  # "splash" (TPU kernel) if the smoke run shows it wins

    # 16 devices on 4 hosts (see the docstring): data x fsdp x tensor must be 16.
    config.mesh.data = 1  # no pure replicas: every chip is needed to shard the optimizer state
    config.mesh.fsdp = 16  # all 16 chips (across the 4 hosts) shard state and split the batch
    config.mesh.tensor = 1  # not needed at 1B; it could go up to 4 (one host's chips)

    config.train.global_batch_size = 512  # rows per update, all chips and micro-batches
    # 512 / 8 = 64 rows per micro-batch = 4 per chip: with remat="full" each row holds its
    # 16 block inputs (8 MB each) plus, for the layer being recomputed, 512 MB of float32
    # attention scores and 268 MB of logits (twice with their gradient).
    config.train.grad_accum_steps = 8  # micro-batches per update; 64 must divide by fsdp=16
    config.train.eval_batch_size = 32  # rows per validation batch; a multiple of data x fsdp
    # Spot slices are preempted with a short notice, which may not cover a full save of
    # ~13 GB through the bucket: time-based saves bound the work lost to 15 minutes.
    config.checkpoint.save_every_minutes = 15.0  # also save when this much time passed
    return config
