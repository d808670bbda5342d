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
Reaches: not measured yet (no loss, time, memory or throughput figure has been taken).
        The built-in ~2 MB corpus (~0.5M training tokens, half of one 1M-token update) is
        only a smoke test here, which a 1.1B model would memorise: prepare a real corpus
        (`gptjax prepare --source ... --out DIR`, README "Your own data") and add
        --config.data.source=prepared --config.data.prepared_dir=DIR.
"""

import ml_collections

from gptjax.sharding import DEFAULT_RULES


def get_config() -> ml_collections.ConfigDict:
    config = ml_collections.ConfigDict()
    config.seed = 0  # seeds init, data order and dropout

    config.model = model = ml_collections.ConfigDict()
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
    model.norm = "rmsnorm"  # RMSNorm without bias, as Llama
    model.activation = "swiglu"  # SiLU-gated MLP, as Llama
    model.use_bias = False  # no projection biases, as Llama
    # Untied, as Llama 2 and Llama 3 8B (Llama 3.2 1B ties them): the head gets its own
    # 32768 x 2048 matrix (67M parameters).
    model.tie_embeddings = False  # output head shares the embedding table
    model.norm_eps = 1e-5  # epsilon inside RMSNorm (Llama's rms_norm_eps)
    model.rope_theta = 500_000.0  # rotary base period (Llama 3's; Llama 2 used 10,000)
    model.dropout_rate = 0.0  # dropout probability; Llama pretrains without dropout
    model.dtype = "bfloat16"  # compute dtype; parameters, logits and optimizer stay float32
    # "full" keeps only each block's input (2048 x 2048 x 2 B = 8 MB per row per layer) and
    # recomputes the block in the backward pass: one more forward (~+33% FLOPs) in exchange
    # for not holding the 32 x L x L attention scores (512 MB per row per layer in float32)
    # and the 3 x F-wide SwiGLU activations of all 16 layers at once.
    model.remat = "full"  # "none", "full" or "dots"
    model.scan_layers = True  # lax.scan over layers: one compiled block instead of 16
    # "xla" runs anywhere; on an accelerator pick its kernel: "splash" (TPU, seq_len a multiple
    # of 128) or "cudnn" (GPU, bfloat16). See README "Attention kernels".
    model.attention = "xla"
    model.init_std = 0.02  # std of the normal initialiser (Llama's initializer_range)

    config.mesh = mesh = ml_collections.ConfigDict()
    mesh.data = 1  # pure data-parallel replicas; raise across hosts/slices when fsdp is enough
    mesh.fsdp = -1  # shards parameters and optimizer state over every chip (ZeRO-3 style)
    # 1: a 1B model's weights are all-gathered per layer far faster than tensor parallelism's
    # per-matmul collectives would cost; use it only if a chip cannot hold one layer's work.
    mesh.tensor = 1  # splits heads / mlp / vocab inside each layer
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
    data.vocab_size = 32768  # pieces in the tokenizer trained for the run (builtin)
    data.tokenizer_type = "bpe"  # "bpe", "unigram" or "char"
    # "" = train one in the workdir (builtin) or use prepared_dir/tokenizer (prepared); a path
    # given with source="prepared" must be the tokenizer the shards were written with.
    data.tokenizer = ""  # path of a tokenizer dir or its tokenizer.model
    data.seq_len = 2048  # tokens per row (L); Llama 1's context (Llama 2: 4096, Llama 3: 8192)
    data.validation_fraction = 0.05  # documents held out (builtin; prepare fixes its own)

    config.train = train = ml_collections.ConfigDict()
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
    train.max_bad_steps = 5  # abort (exit 70) after this many consecutive non-finite steps

    config.optim = optim = ml_collections.ConfigDict()
    # Llama 2's recipe (paper, section 2.2): peak 3e-4, 2000 warmup steps, cosine to 10%,
    # AdamW b1 0.9 / b2 0.95 / eps 1e-5, weight decay 0.1, gradient clip 1.0.
    optim.peak_lr = 3e-4  # learning rate after warmup
    optim.end_lr_fraction = 0.1  # final lr = peak_lr * this, reached at train.steps
    optim.warmup_steps = 2000  # linear warmup from 0
    optim.b1 = 0.9  # Adam first-moment decay
    optim.b2 = 0.95  # Adam second-moment decay
    optim.eps = 1e-5  # Adam denominator epsilon (Llama 2's)
    optim.weight_decay = 0.1  # decoupled decay on weight matrices only
    optim.clip_norm = 1.0  # global gradient-norm clip

    config.checkpoint = checkpoint = ml_collections.ConfigDict()
    checkpoint.save_every = 500  # steps between checkpoints (and one at the end)
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
