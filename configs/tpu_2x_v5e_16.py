"""Llama-style 1B on two TPU v5e-16 slices joined over DCN: configs/tpu_v5e_16.py, twice.

Run:    gptjax train --config configs/tpu_2x_v5e_16.py --workdir /gcs/BUCKET/runs/llama-1b-2x
        on all 8 workers of both slices at once; tools/tpu/start.sh --type v5litepod-16
        --node-count 2 --config configs/tpu_2x_v5e_16.py ... runs exactly this there (a queued
        resource made by tools/tpu/create.sh --node-count 2 --queued; docs/tpu.md).
Slices: 2 x v5litepod-16 = 2 x 16 TPU v5e chips on 2 x 4 hosts of 4 chips:
        JAX sees 32 devices in 8 processes, 4 local devices each, with slice_index 0 or 1.
        Within a slice chips talk over ICI; between slices only over the data-center network
        (DCN), which is much slower.
Mesh:   within each slice as configs/tpu_v5e_16.py (fsdp=16 shards the 18 GB of float32
        parameters and AdamW state to 1.1 GB per chip); mesh.dcn_data=2 makes the two slices
        replicas of each other: the global mesh is data=2 x fsdp=16, and the only traffic over
        DCN is one gradient all-reduce per update. fsdp over DCN (dcn_fsdp) would gather every
        layer's weights across slices, so it is kept within a slice.
Batch:  512 rows of 2048 tokens (1M tokens) per update, as the one-slice config, so the two
        runs follow the same loss curve; 4 micro-batches of 128 rows = 4 rows per chip (the
        one-slice config's per-chip load), 64 rows per host.
Params: 1,107,363,840, as configs/llama_1b.py.
Kernels: model.dtype and model.attention are tpu_v5e_16.py's, unmeasured on TPU as there:
        tools/tpu/smoke.sh decides them (docs/tpu.md, "First hour on a TPU").
Reaches: not measured yet (no loss, time, memory or throughput figure has been taken).
        Expect about twice the one-slice config's tokens/s, less the DCN all-reduce of 4.4 GB
        of float32 gradients per update.
"""

from pathlib import Path

import ml_collections

from gptjax.config import load_config_file


def get_config() -> ml_collections.ConfigDict:
    config = load_config_file(Path(__file__).with_name("tpu_v5e_16.py"))

    # Per slice (data x fsdp x tensor = 16, the one-slice mesh); dcn_*: slices per axis.
    config.mesh.dcn_data = 2  # the 2 slices hold replicas: data = 2 slices x 1
    config.mesh.dcn_fsdp = 1  # fsdp stays within a slice's ICI

    config.train.global_batch_size = 512  # rows per update, as tpu_v5e_16.py
    config.train.grad_accum_steps = 4  # 128 rows per micro-batch = 4 per chip on 32 chips
    config.train.eval_batch_size = 32  # a multiple of data x fsdp = 32
    return config
