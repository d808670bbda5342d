"""Tiny GPT-2-style model on the built-in corpus: the CPU smoke test and `make demo`.

Run:    gptjax train --config configs/tiny.py --workdir runs/tiny     (or: make demo)
Reaches: validation loss 4.16 nats/token at step 800 against a unigram entropy of 5.97
         (vocab 2048), training in about 5 minutes on 2 CPU cores at ~5,800 tokens/s with
         two simulated host devices (float32); see docs/benchmarks.md.
"""

import ml_collections

from gptjax.sharding import DEFAULT_RULES


def get_config() -> ml_collections.ConfigDict:
    config = ml_collections.ConfigDict()
    config.seed = 0  # seeds init, data order and dropout

    config.model = model = ml_collections.ConfigDict()
    model.vocab_size = 2048  # embedding rows; >= data.vocab_size (padding up is allowed)
    model.num_layers = 4  # N, transformer blocks
    model.num_heads = 4  # H, query heads
    model.num_kv_heads = None  # G, key/value heads; None = num_heads (no grouping)
    model.head_dim = None  # K; None = embed_dim // num_heads
    model.embed_dim = 128  # D, residual stream width
    model.mlp_dim = 512  # F, MLP hidden width
    model.max_seq_len = 128  # longest row the learned position table covers, tokens
    model.position = "learned"  # "learned" (GPT-2) or "rope" (Llama)
    model.norm = "layernorm"  # "layernorm" (GPT-2) or "rmsnorm" (Llama)
    model.activation = "gelu"  # "gelu" (GPT-2) or "swiglu" (Llama)
    model.use_bias = True  # biases on projections (GPT-2 yes, Llama no)
    model.tie_embeddings = True  # output head shares the embedding table
    model.norm_eps = 1e-5  # epsilon inside the norms
    model.rope_theta = 10_000.0  # rotary base period (only with position="rope")
    model.dropout_rate = 0.0  # dropout probability; 0 for short runs on small data
    model.dtype = "float32"  # compute dtype, "float32" or "bfloat16" (bf16 is slower on CPU)
    model.remat = "none"  # "none", "full" or "dots": recompute activations in the backward pass
    model.scan_layers = True  # lax.scan over layers: one compiled block instead of N
    model.init_std = 0.02  # std of the normal initialiser

    config.mesh = mesh = ml_collections.ConfigDict()
    mesh.data = -1  # pure data-parallel replicas; -1 = all remaining devices
    mesh.fsdp = 1  # data parallel that also shards parameters and optimizer state
    mesh.tensor = 1  # splits heads / mlp / vocab inside each layer
    # logical axis -> mesh axes; the only place that decides where parameters live
    config.sharding_rules = DEFAULT_RULES

    config.data = data = ml_collections.ConfigDict()
    data.source = "builtin"  # the corpus assembled from the Python standard library's docs
    data.vocab_size = 2048  # sentencepiece vocabulary trained for the run
    data.tokenizer_type = "bpe"  # "bpe", "unigram" or "char"
    data.tokenizer = ""  # path of an existing tokenizer dir/.model; "" = train one in the workdir
    data.seq_len = 128  # tokens per row (L)
    data.validation_fraction = 0.05  # fraction of documents held out for validation

    config.train = train = ml_collections.ConfigDict()
    train.steps = 800  # optimizer updates
    train.global_batch_size = 16  # rows per update across all devices and micro-batches
    train.grad_accum_steps = 1  # micro-batches per update (lax.scan inside the step)
    train.log_every = 20  # steps between metric lines
    train.eval_every = 200  # steps between validation passes (and one at the end)
    train.eval_batches = 16  # validation batches per pass (0-padded at the end)
    train.eval_batch_size = 16  # rows per validation batch
    train.max_bad_steps = 5  # abort (exit 70) after this many consecutive non-finite steps

    config.optim = optim = ml_collections.ConfigDict()
    optim.peak_lr = 3e-3  # learning rate after warmup
    optim.end_lr_fraction = 0.1  # final lr = peak_lr * this, reached at train.steps
    optim.warmup_steps = 50  # linear warmup from 0
    optim.b1 = 0.9  # Adam first-moment decay
    optim.b2 = 0.95  # Adam second-moment decay
    optim.eps = 1e-8  # Adam denominator epsilon
    optim.weight_decay = 0.1  # decoupled decay on weight matrices only
    optim.clip_norm = 1.0  # global gradient-norm clip

    config.sample = sample = ml_collections.ConfigDict()
    sample.prompts = ("The json module", "Return the", "class ")  # printed after training
    sample.max_new_tokens = 48  # tokens generated per prompt
    sample.temperature = 0.8  # 0 = greedy
    sample.top_k = 40  # 0 = no top-k filter
    return config
