"""GPT-2 small (124M): exactly GPT-2's shape, trained with nanoGPT's GPT-2 recipe.

Run:    gptjax train --config configs/gpt2_124m.py --workdir runs/gpt2
For:    a TPU host such as a v4-8 or v5e-8 (4-8 chips, one process); bf16 compute, fsdp mesh.
        On a larger slice the same file runs unchanged (mesh.fsdp=-1 takes every chip);
        lower train.grad_accum_steps there so each chip keeps ~8 rows per micro-batch.
Params: 124,439,808 with model.vocab_size=50257, the same count as Hugging Face's `gpt2`
        (tied embeddings, 1024 learned positions); tests/test_configs.py checks it.
Base:   configs/tiny.py, already GPT-2's architecture (learned positions, LayerNorm with bias,
        tanh GELU, biases, tied embeddings); below only what differs from it.
Reaches: not measured yet (no loss, time or throughput figure has been taken with this file).
        With the default built-in ~2 MB corpus (~0.5M training tokens with the 32768-piece
        tokenizer, less than one update's 524,288) every step is an epoch and a 124M model
        would memorise it: prepare a real corpus (`gptjax prepare --source ... --out DIR`,
        README "Your own data") and add --config.data.source=prepared
        --config.data.prepared_dir=DIR. Until a run is measured this file is a reference for
        the shape, mesh, batch and schedule, not a recipe with a target.
        For orientation only (nanoGPT's figure, GPT-2's tokenizer on OpenWebText, not a
        gptjax measurement): nanoGPT reports a validation loss of ~2.85 after this schedule.
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
    # GPT-2's table size: 50,000 merges + 256 bytes + <|endoftext|>. Kept so the parameter
    # count and a Hugging Face import line up one to one; a trained tokenizer of
    # data.vocab_size pieces fills only the first rows (the rest are never indexed).
    model.vocab_size = 50257  # embedding rows; >= data.vocab_size
    model.num_layers = 12  # N, transformer blocks
    model.num_heads = 12  # H, query heads (head_dim = 768 // 12 = 64; no kv grouping)
    model.embed_dim = 768  # D, residual stream width
    model.mlp_dim = 3072  # F, MLP hidden width (4 x D)
    model.max_seq_len = 1024  # rows of the learned position table, tokens (GPT-2's context)
    # dropout_rate stays 0: GPT-2 used 0.1, but for pretraining on far more tokens than
    # parameters nanoGPT uses 0, since one epoch leaves nothing to regularise.
    model.dtype = "bfloat16"  # compute dtype; parameters, logits and optimizer stay float32
    # "dots" keeps the outputs of the weight matmuls (q/k/v/o, MLP) and recomputes the rest
    # in the backward pass: the elementwise ops and the H x L x L attention scores, the
    # largest activations at L=1024 (12 x 1024 x 1024 x 4 B = 50 MB per row per layer).
    # "full" keeps only each block's input: less memory, one more forward of compute.
    model.remat = "dots"  # "none", "full" or "dots"
    # attention stays "xla", which runs anywhere; on an accelerator pick its kernel: "splash"
    # (TPU, seq_len a multiple of 128) or "cudnn" (GPU, bfloat16). README "Attention kernels".

    mesh = config.mesh
    mesh.data = 1  # no pure data-parallel replicas
    # 124M parameters + AdamW state (~2 GB in float32) fit on one chip, but sharding them
    # (ZeRO-3 style) frees HBM for activations and costs little over TPU interconnect.
    # mesh.tensor stays 1: 12 heads of 64 are too small to split usefully.
    mesh.fsdp = -1  # data parallel that also shards parameters and optimizer state; all chips

    data = config.data
    # A sentencepiece vocabulary trained for the run fills part of model.vocab_size's table;
    # importing GPT-2's own 50257-piece tokenizer is the Hugging Face issue's job.
    data.vocab_size = 32768  # pieces in the trained tokenizer; <= model.vocab_size (builtin)
    data.seq_len = 1024  # tokens per row (L), GPT-2's context

    train = config.train
    # nanoGPT's GPT-2 schedule: 600k updates x 0.5M tokens = ~300B tokens. A compute-optimal
    # (Chinchilla, ~20 tokens/param) run would stop near 5,000 steps = 2.5B tokens; override
    # train.steps for that.
    train.steps = 600_000  # optimizer updates
    # 512 rows x 1024 tokens = 524,288 tokens per update (nanoGPT: 491,520, GPT-3 small: 0.5M).
    train.global_batch_size = 512  # rows per update across all chips and micro-batches
    # 512 / 8 = 64 rows per micro-batch: 8 rows per chip on 8 chips (16 on a v4-8's 4). The
    # float32 logits of one row are 1024 x 50257 x 4 B = 206 MB (twice that with their
    # gradient), which is what bounds the micro-batch. Must keep 512 / grad_accum_steps
    # divisible by mesh.data x mesh.fsdp.
    train.grad_accum_steps = 8  # micro-batches per update (lax.scan inside the step)
    train.log_every = 10  # steps between metric lines
    train.eval_every = 1000  # steps between validation passes (and one at the end)
    train.eval_batches = 40  # validation batches per pass (0-padded at the end)
    train.eval_batch_size = 64  # rows per validation batch; a multiple of mesh.data x mesh.fsdp

    optim = config.optim
    # b1 0.9, b2 0.95 (steadier than 0.999 at large batch), eps 1e-8, weight decay 0.1 and
    # clip 1.0 are the base's, and GPT-3's / nanoGPT's.
    optim.peak_lr = 6e-4  # learning rate after warmup (GPT-3 paper's value for 125M; nanoGPT)
    # end_lr_fraction stays 0.1: final lr = 6e-5, reached at train.steps (nanoGPT's min_lr).
    optim.warmup_steps = 2000  # linear warmup from 0 (nanoGPT), ~1B tokens

    checkpoint = config.checkpoint
    checkpoint.save_every = 1000  # steps between checkpoints (and one at the end)
    checkpoint.save_every_minutes = 30.0  # also save when this much time passed; 0 = off

    config.sample.max_new_tokens = 64  # tokens generated per prompt
    return config
