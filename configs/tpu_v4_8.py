"""GPT-2 small (124M) on a TPU v4-8: configs/gpt2_124m.py with the mesh and batch of that slice.

Run:    gptjax train --config configs/tpu_v4_8.py --workdir /gcs/BUCKET/runs/gpt2
        on the slice's one worker; tools/tpu/start.sh --type v4-8 --config
        configs/tpu_v4_8.py ... runs exactly this there (docs/tpu.md).
Slice:  v4-8 = 4 TPU v4 chips (32 GB HBM each) on 1 host. The name counts TensorCores: each
        chip's 2 cores run as one "megacore" device, so JAX sees 4 devices in 1 process
        (jax.device_count() == jax.local_device_count() == 4).
Mesh:   the rule for every slice: `data` and `fsdp` may span hosts, `tensor` stays inside one
        host (at most its local devices), since its collectives run inside every matmul. Here
        all 4 devices are on one host; fsdp=4 shards the ~2 GB of float32 parameters and AdamW
        state (0.5 GB per chip) and splits the batch 4 ways.
Params: 124,439,808, as configs/gpt2_124m.py (everything but the fields set below is that file's).
Kernels: model.dtype="bfloat16" and model.attention="xla" (set below) are unmeasured on TPU:
        tools/tpu/smoke.sh decides them (docs/tpu.md, "First hour on a TPU").
Reaches: not measured yet (no loss, time or throughput figure has been taken with this file).
        With the built-in ~2 MB corpus every step is an epoch: prepare a real corpus
        (`gptjax prepare`, README "Your own data") and add --config.data.source=prepared
        --config.data.prepared_dir=DIR.
"""

from pathlib import Path

import ml_collections

from gptjax.config import load_config_file


def get_config() -> ml_collections.ConfigDict:
    config = load_config_file(Path(__file__).with_name("gpt2_124m.py"))

    # Unmeasured on TPU: bfloat16 (the usual TPU compute dtype) and the XLA attention (runs
    # anywhere) stay until tools/tpu/smoke.sh, splash vs xla and bfloat16 vs float32 on this
    # hardware, decides them.
    config.model.dtype = "bfloat16"  # compute dtype; parameters and optimizer stay float32
    config.model.attention = "xla"  # "splash" (TPU kernel) if the smoke run shows it wins

    # 4 devices on 1 host (see the docstring): data x fsdp x tensor must be 4.
    config.mesh.data = 1  # no pure replicas: a 124M model gains nothing from replicating
    config.mesh.fsdp = 4  # all 4 chips shard parameters/optimizer state and split the batch
    config.mesh.tensor = 1  # 12 heads of 64 are too small to split; <= 4 local devices anyway

    # 512 rows x 1024 tokens = 524,288 tokens per update, as gpt2_124m.
    config.train.global_batch_size = 512  # rows per update, all chips and micro-batches
    # 512 / 8 = 64 rows per micro-batch = 16 rows per chip; their float32 logits (16 x 1024 x
    # 50257 x 4 B = 3.3 GB, twice with the gradient) bound it within 32 GB of HBM.
    config.train.grad_accum_steps = 8  # micro-batches per update; 64 must divide by fsdp=4
    config.train.eval_batch_size = 64  # rows per validation batch; a multiple of data x fsdp
    # TPU VMs are preempted (spot) or restarted: a preemption notice is short, so the save it
    # triggers may not finish; time-based saves bound the work lost to 15 minutes.
    config.checkpoint.save_every_minutes = 15.0  # also save when this much time passed
    return config
