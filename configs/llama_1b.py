"""Llama-style 1B: Llama 3.2 1B's blocks with a 32768-piece vocabulary and an untied head.

Run:    gptjax train --config configs/llama_1b.py --workdir runs/llama_1b
For:    a TPU slice of at least 8 chips with 16 GB HBM each (v5e-8; or a v4-8's 4 chips of
        32 GB with mesh.fsdp=-1 as is). Parameters, gradients and AdamW moments in float32
        are 16 B x 1.1B = ~18 GB, which is why they are sharded over every chip (fsdp).
        A v5e-32 / v4-32 or larger is what a useful token budget wants; the mesh and batch
        below run unchanged there (lower train.grad_accum_steps to use the extra memory).
Params: 1,107,363,840 (gptjax.model.count_params; tests/test_configs.py checks it against
        the built model): 16 blocks x 60.8M + two 32768 x 2048 tables (embedding and head).
        Llama 3.2 1B itself ties its head to a 128256-row embedding; with that vocabulary and
        this untied head the count would be 1.50B.
Base:   configs/tiny.py (a GPT-2-style model); below only what differs from it, starting
        with Llama's architecture.
Reaches: not measured yet (no loss, time, memory or throughput figure has been taken).
        The built-in ~2 MB corpus (~0.5M training tokens, half of one 1M-token update) is
        only a smoke test here, which a 1.1B model would memorise: prepare a real corpus
        (`gptjax prepare --source ... --out DIR`, README "Your own data") and add
        --config.data.source=prepared --config.data.prepared_dir=DIR.
"""

from pathlib import Path

import ml_collections

from gptjax.config import load_config_file


def _base_config() -> ml_collections.ConfigDict:
    # The commented base with every field: configs/tiny.py beside this file.
    return load_config_file(Path(__file__).with_name("tiny.py"))


def get_config() -> ml_collections.ConfigDict:
    config = _base_config()

    model = config.model
    # 32768 = the trained tokenizer's size (a multiple of 128, so the vocab matmul tiles
    # evenly); Llama 2 used 32000. Llama 3's 128256 would add 391M parameters of tables.
    model.vocab_size = 32768  # embedding rows; >= data.vocab_size
    model.num_layers = 16  # N, transformer blocks (Llama 3.2 1B)
    model.num_heads = 32  # H, query heads
    model.num_kv_heads = 8  # G, key/value heads: 4 query heads share each (grouped-query attention)
    model.head_dim = 64  # K, dims per head (= embed_dim / num_heads)
    model.embed_dim = 2048  # D, residual stream width
    model.mlp_dim = 8192  # F, SwiGLU hidden width (gate, up and down: 3 x D x F per block)
    # With rotary positions nothing is sized by this; it caps data.seq_len and generation.
    model.max_seq_len = 2048  # longest row, tokens
    model.position = "rope"  # rotary positions, Hugging Face's half-split layout
    model.norm = "rmsnorm"  # RMSNorm without bias, as Llama (norm_eps stays 1e-5, Llama's)
    model.activation = "swiglu"  # SiLU-gated MLP, as Llama
    model.use_bias = False  # no projection biases, as Llama
    # Untied, as Llama 2 and Llama 3 8B (Llama 3.2 1B ties them): the head gets its own
    # 32768 x 2048 matrix (67M parameters).
    model.tie_embeddings = False  # the output head is its own matrix, not the embedding table
    model.rope_theta = 500_000.0  # rotary base period (Llama 3's; Llama 2 used 10,000)
    # dropout_rate stays 0: Llama pretrains without dropout.
    model.dtype = "bfloat16"  # compute dtype; parameters, logits and optimizer stay float32
    # "full" keeps only each block's input (2048 x 2048 x 2 B = 8 MB per row per layer) and
    # recomputes the block in the backward pass: one more forward (~+33% FLOPs) in exchange
    # for not holding the 32 x L x L attention scores (512 MB per row per layer in float32)
    # and the 3 x F-wide SwiGLU activations of all 16 layers at once.
    model.remat = "full"  # "none", "full" or "dots"
    # attention stays "xla", which runs anywhere; on an accelerator pick its kernel: "splash"
    # (TPU, seq_len a multiple of 128) or "cudnn" (GPU, bfloat16). README "Attention kernels".

    mesh = config.mesh
    mesh.data = 1  # pure data-parallel replicas; raise across hosts/slices when fsdp is enough
    mesh.fsdp = -1  # shards parameters and optimizer state over every chip (ZeRO-3 style)
    # mesh.tensor stays 1: a 1B model's weights are all-gathered per layer far faster than
    # tensor parallelism's per-matmul collectives would cost; use it only if a chip cannot
    # hold one layer's work.

    data = config.data
    data.vocab_size = 32768  # pieces in the tokenizer trained for the run (builtin)
    data.seq_len = 2048  # tokens per row (L); Llama 1's context (Llama 2: 4096, Llama 3: 8192)

    train = config.train
    # 20,000 x 1M tokens = ~21B tokens, ~20 tokens per parameter (Chinchilla-optimal).
    # Llama 3.2 1B saw ~9T tokens; raise train.steps if the corpus and budget allow.
    train.steps = 20_000  # optimizer updates
    # 512 rows x 2048 tokens = 1,048,576 tokens per update (Llama 2 used 4M at 7B+).
    train.global_batch_size = 512  # rows per update across all chips and micro-batches
    # 512 / 16 = 32 rows per micro-batch: 4 rows per chip on 8 chips. One row's float32
    # logits are 2048 x 32768 x 4 B = 268 MB (twice with their gradient), and a remat'd
    # layer's attention scores 512 MB more. 512 / grad_accum_steps must stay divisible by
    # mesh.data x mesh.fsdp.
    train.grad_accum_steps = 16  # micro-batches per update (lax.scan inside the step)
    train.log_every = 10  # steps between metric lines
    train.eval_every = 500  # steps between validation passes (and one at the end)
    train.eval_batches = 20  # validation batches per pass (0-padded at the end)
    train.eval_batch_size = 32  # rows per validation batch; a multiple of mesh.data x mesh.fsdp

    optim = config.optim
    # Llama 2's recipe (paper, section 2.2): peak 3e-4, 2000 warmup steps, cosine to 10%,
    # AdamW b1 0.9 / b2 0.95 / eps 1e-5, weight decay 0.1, gradient clip 1.0 (the values
    # not set here are the base's already).
    optim.peak_lr = 3e-4  # learning rate after warmup
    optim.warmup_steps = 2000  # linear warmup from 0
    optim.eps = 1e-5  # Adam denominator epsilon (Llama 2's)

    checkpoint = config.checkpoint
    checkpoint.save_every = 500  # steps between checkpoints (and one at the end)
    checkpoint.save_every_minutes = 30.0  # also save when this much time passed; 0 = off

    config.sample.max_new_tokens = 64  # tokens generated per prompt
    return config
