"""GPT-2 small (124M): exactly GPT-2's shape, trained with nanoGPT's GPT-2 recipe.

Run:    gptjax train --config configs/gpt2_124m.py --workdir runs/gpt2
For:    a TPU host such as a v4-8 or v5e-8 (4-8 chips, one process); bf16 compute, fsdp mesh.
        On a larger slice the same file runs unchanged (mesh.fsdp=-1 takes every chip);
        lower train.grad_accum_steps there so each chip keeps ~8 rows per micro-batch.
Params: 124,439,808 with model.vocab_size=50257, the same count as Hugging Face's `gpt2`
        (tied embeddings, 1024 learned positions); tests/test_configs.py checks it.
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

import ml_collections

from gptjax.sharding import DEFAULT_RULES


def get_config() -> ml_collections.ConfigDict:
    config = ml_collections.ConfigDict()
    config.seed = 0  # seeds init, data order and dropout

    config.model = model = ml_collections.ConfigDict()
    # GPT-2's table size: 50,000 merges + 256 bytes + <|endoftext|>. Kept so the parameter
    # count and a Hugging Face import line up one to one; a trained tokenizer of
    # data.vocab_size pieces fills only the first rows (the rest are never indexed).
    model.vocab_size = 50257  # embedding rows; >= data.vocab_size
    model.num_layers = 12  # N, transformer blocks
    model.num_heads = 12  # H, query heads
    model.num_kv_heads = None  # G, key/value heads; None = num_heads (GPT-2 has no grouping)
    model.head_dim = None  # K; None = embed_dim // num_heads = 64
    model.embed_dim = 768  # D, residual stream width
    model.mlp_dim = 3072  # F, MLP hidden width (4 x D)
    model.max_seq_len = 1024  # rows of the learned position table, tokens (GPT-2's context)
    model.position = "learned"  # GPT-2's learned absolute positions
    model.norm = "layernorm"  # LayerNorm with bias, as GPT-2
    model.activation = "gelu"  # tanh-approximated GELU, as GPT-2
    model.use_bias = True  # biases on every projection, as GPT-2
    model.tie_embeddings = True  # output head shares the embedding table, as GPT-2
    model.norm_eps = 1e-5  # epsilon inside the norms (GPT-2's layer_norm_epsilon)
    model.rope_theta = 10_000.0  # unused with position="learned"
    # GPT-2 used 0.1; for pretraining on far more tokens than parameters nanoGPT uses 0,
    # since one epoch leaves nothing to regularise and dropout costs throughput.
    model.dropout_rate = 0.0  # dropout probability
    model.dtype = "bfloat16"  # compute dtype; parameters, logits and optimizer stay float32
    # "dots" keeps the outputs of the weight matmuls (q/k/v/o, MLP) and recomputes the rest
    # in the backward pass: the elementwise ops and the H x L x L attention scores, the
    # largest activations at L=1024 (12 x 1024 x 1024 x 4 B = 50 MB per row per layer).
    # "full" keeps only each block's input: less memory, one more forward of compute.
    model.remat = "dots"  # "none", "full" or "dots"
    model.scan_layers = True  # lax.scan over layers: one compiled block instead of 12
    # "xla" runs anywhere; on an accelerator pick its kernel: "splash" (TPU, seq_len a multiple
    # of 128) or "cudnn" (GPU, bfloat16). See README "Attention kernels".
    model.attention = "xla"
    model.init_std = 0.02  # std of the normal initialiser (GPT-2's initializer_range)

    config.mesh = mesh = ml_collections.ConfigDict()
    mesh.data = 1  # pure data-parallel replicas
    # 124M parameters + AdamW state (~2 GB in float32) fit on one chip, but sharding them
    # (ZeRO-3 style) frees HBM for activations and costs little over TPU interconnect.
    mesh.fsdp = -1  # data parallel that also shards parameters and optimizer state; -1 = all chips
    mesh.tensor = 1  # no tensor parallelism: 12 heads of 64 are too small to split usefully
    # logical axis -> mesh axes; the only place that decides where parameters live
    config.sharding_rules = DEFAULT_RULES

    config.data = data = ml_collections.ConfigDict()
    # "builtin": the corpus from Python's own docs, tokenized into the workdir on first run;
    # "prepared": token shards written by `gptjax prepare` (your text files, JSONL, tfds).
    data.source = "builtin"
    data.prepared_dir = ""  # the --out directory of `gptjax prepare` (source="prepared")
    # source="conversations" (SFT): "builtin" (questions about the built-in corpus's names)
    # or JSONL files/globs, comma-separated, of {"messages": [...]} or {"prompt", "response"}.
    data.conversations = ""
    # source="preferences" (DPO): "builtin" (true vs wrong answers to the built-in questions)
    # or JSONL files/globs of {"prompt" or "messages", "chosen", "rejected"}, comma-separated.
    data.preferences = ""
    # True: packed rows restart positions and attention at each document (segment_ids);
    # False: plain concatenate-and-chunk, attention crosses document boundaries.
    data.packing = True
    data.verify_shards = True  # sha256 + id range of every shard at start (~1 GB/s per core)
    # A sentencepiece vocabulary trained for the run fills part of model.vocab_size's table;
    # importing GPT-2's own 50257-piece tokenizer is the Hugging Face issue's job.
    data.vocab_size = 32768  # pieces in the trained tokenizer; <= model.vocab_size (builtin)
    data.tokenizer_type = "bpe"  # "bpe", "unigram" or "char"
    # "" = train one in the workdir (builtin) or use prepared_dir/tokenizer (prepared); a path
    # given with source="prepared" must be the tokenizer the shards were written with.
    data.tokenizer = ""  # path of a tokenizer dir or its tokenizer.model
    data.seq_len = 1024  # tokens per row (L), GPT-2's context
    data.validation_fraction = 0.05  # documents held out (builtin; prepare fixes its own)

    config.train = train = ml_collections.ConfigDict()
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
    train.max_bad_steps = 5  # abort (exit 70) after this many consecutive non-finite steps

    config.optim = optim = ml_collections.ConfigDict()
    optim.peak_lr = 6e-4  # learning rate after warmup (GPT-3 paper's value for 125M; nanoGPT)
    optim.end_lr_fraction = 0.1  # final lr = 6e-5, reached at train.steps (nanoGPT's min_lr)
    optim.warmup_steps = 2000  # linear warmup from 0 (nanoGPT), ~1B tokens
    optim.b1 = 0.9  # Adam first-moment decay
    optim.b2 = 0.95  # Adam second-moment decay (0.95, not 0.999: steadier at large batch)
    optim.eps = 1e-8  # Adam denominator epsilon
    optim.weight_decay = 0.1  # decoupled decay on weight matrices only
    optim.clip_norm = 1.0  # global gradient-norm clip

    config.checkpoint = checkpoint = ml_collections.ConfigDict()
    checkpoint.save_every = 1000  # steps between checkpoints (and one at the end)
    checkpoint.save_every_minutes = 30.0  # also save when this much time passed; 0 = off
    checkpoint.keep_last = 2  # committed checkpoints kept, newest first
    checkpoint.keep_every = 0  # also keep every checkpoint at a multiple of this step; 0 = off
    checkpoint.async_save = True  # write in the background; the loop blocks only to copy
    checkpoint.resume_step = -1  # restore this step instead of the latest; -1 = latest
    config.phase = "pretrain"  # recipe phase recorded in checkpoints: pretrain, sft or dpo
    # a workdir (or WORKDIR/checkpoints/STEP) whose parameters start this run; "" = fresh init.
    # The workdir's own checkpoints take priority (a restarted run resumes itself).
    config.init_from = ""

    config.sample = sample = ml_collections.ConfigDict()
    sample.prompts = ("The json module", "Return the", "class ")  # printed after training
    sample.max_new_tokens = 64  # tokens generated per prompt
    sample.temperature = 0.8  # 0 = greedy
    sample.top_k = 40  # 0 = no top-k filter

    config.dpo = dpo = ml_collections.ConfigDict()  # read only when phase="dpo"
    dpo.beta = 0.1  # strength of the pull towards the reference (larger: stay closer)
    dpo.label_smoothing = 0.0  # > 0: conservative DPO, assumes this fraction of flipped labels
    dpo.loss = "sigmoid"  # "sigmoid" (DPO) or "ipo"
    # "model": a frozen copy of the SFT weights runs beside the policy every step;
    # "precomputed": its log-probabilities are computed once before training (saves memory).
    dpo.reference = "model"
    return config
