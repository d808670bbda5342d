"""Llama-style 1B on a TPU v5p-32: configs/llama_1b.py with that slice's mesh and batch.

Run:    gptjax train --config configs/tpu_v5p_32.py --workdir /gcs/BUCKET/runs/llama-1b
        on all 4 workers at once; tools/tpu/start.sh --type v5p-32 --config
        configs/tpu_v5p_32.py ... runs exactly this there (docs/tpu.md).
Slice:  v5p-32 = 16 TPU v5p chips (95 GB HBM each) on 4 hosts of 4 chips. The name counts
        TensorCores: each chip's 2 cores run as one megacore device, so
        JAX sees 16 devices in 4 processes, 4 local devices each (cloud.google.com/tpu/docs/v5p:
        2x2x1 = 8 cores, 4 chips, 1 host; Google's xpk table: v5p-32 = 2x2x4, 4 VMs of 4 chips).
Mesh:   `data` and `fsdp` may span hosts, `tensor` stays inside one host (at most its 4 local
        devices), since its collectives run inside every matmul. With 95 GB per chip, fsdp=4
        already brings the 18 GB of float32 parameters and AdamW state to 4.4 GB per chip; the
        other factor of 4 is plain data parallelism: the per-layer parameter all-gathers stay
        within groups of 4 chips, and the replicas only all-reduce gradients.
Batch:  512 rows of 2048 tokens (1M tokens) per update, 128 rows per host; 4 micro-batches of
        128 rows = 8 rows per chip (twice llama_1b's, with 6x its HBM per chip).
Params: 1,107,363,840, as configs/llama_1b.py (everything but the fields set below is that file's).
Kernels: model.dtype="bfloat16" and model.attention="xla" (set below) are unmeasured on TPU:
        tools/tpu/smoke.sh decides them (docs/tpu.md, "First hour on a TPU").
Reaches: not measured yet (no loss, time, memory or throughput figure has been taken).
        Prepare a real corpus (docs/tpu.md, `gptjax prepare`) and add
        --config.data.source=prepared --config.data.prepared_dir=DIR.
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
    config.mesh.data = 4  # 4 replicas of the sharded state; gradients all-reduced between them
    config.mesh.fsdp = 4  # each replica's state sharded over 4 chips (4.4 GB per chip)
    config.mesh.tensor = 1  # not needed at 1B; it could go up to 4 (one host's chips)

    config.train.global_batch_size = 512  # rows per update, all chips and micro-batches
    # 512 / 4 = 128 rows per micro-batch = 8 per chip over data x fsdp = 16; lower
    # grad_accum_steps further if memory allows (2 = 16 rows per chip).
    config.train.grad_accum_steps = 4  # micro-batches per update; 128 must divide by 16
    config.train.eval_batch_size = 32  # rows per validation batch; a multiple of data x fsdp
    # Spot and queued TPUs are preempted with a short notice, which may not cover a full save:
    # time-based saves bound the work lost to 15 minutes.
    config.checkpoint.save_every_minutes = 15.0  # also save when this much time passed
    return config
