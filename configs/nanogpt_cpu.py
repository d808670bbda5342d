"""nanoGPT-shaped GPT-2 for CPU speed comparisons: 6 layers, width 384, 6 heads, seq 256.

Run:    gptjax bench --config configs/nanogpt_cpu.py            (synthetic tokens)
        python tools/bench_torch.py --config configs/nanogpt_cpu.py   (vs PyTorch, alternating)
        gptjax train --config configs/nanogpt_cpu.py --workdir runs/nanogpt   (it trains, too)
The shape of nanoGPT's shakespeare_char example with a vocabulary of 8,192 and batch 8: the
configuration docs/benchmarks.md measures against PyTorch eager on 2 CPU cores, float32.
Vocabulary variants: --config.model.vocab_size=50304 (lm-head-dominated) or =65 (chars).
Training uses the built-in corpus with an 8,192-piece tokenizer; the file's purpose is the
benchmark, so no loss target is claimed.
"""

from pathlib import Path

import ml_collections

from gptjax.config import load_config_file


def _tiny_config() -> ml_collections.ConfigDict:
    # Every field not set below (optimizer, data, checkpoint) is configs/tiny.py's.
    return load_config_file(Path(__file__).with_name("tiny.py"))


def get_config() -> ml_collections.ConfigDict:
    config = _tiny_config()
    model = config.model
    model.vocab_size = 8192  # embedding rows (and the lm head's width)
    model.num_layers = 6  # N
    model.num_heads = 6  # H
    model.embed_dim = 384  # D
    model.mlp_dim = 1536  # F = 4 D
    model.max_seq_len = 256  # learned positions
    model.dropout_rate = 0.0  # nanoGPT's benchmark setting; dropout only adds elementwise work
    # Unrolled: on XLA:CPU a scan over layers zero-fills and copies its stacked residuals every
    # step; unrolling 6 layers was 8% faster (docs/benchmarks.md). Compiles take ~2x longer.
    model.scan_layers = False
    # Causal attention by query chunks that skip the masked score blocks: 1.12x the step's
    # speed of "xla" (wall; 1.06x in CPU time) on 2 CPU cores, same outputs (docs/benchmarks.md).
    model.attention = "chunked"
    # XLA:CPU copies a matmul operand into [M, K]·[K, N] form: each weight gradient's product
    # ordered so the small operand is copied (the head's x, not its [B·L, V] logits gradient):
    # backward's pure copies 118 -> 23 MiB per device; 1.05x the step in CPU time (9 rounds;
    # wall 1.04x) on 2 loaded CPU cores, same gradients (gptjax.projection, docs/benchmarks.md).
    model.projection_backward = "smaller_copy"
    # LayerNorm's backward in closed form (two row reductions and one pass, no saved x-hat):
    # 1.05x CPU time alone, 1.04x on top of the line above (docs/benchmarks.md, gptjax.norms).
    model.norm_backward = "closed_form"

    config.data.vocab_size = 8192  # tokenizer pieces when trained on the built-in corpus
    config.data.seq_len = 256  # L

    train = config.train
    train.global_batch_size = 8  # B, rows per step
    train.steps = 1000
    return config
