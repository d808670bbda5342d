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
    # "xla" (anywhere), "chunked" (xla skipping the masked half; faster on CPU), "dot_product",
    # "cudnn" (GPU, bf16) or "splash" (TPU)
    model.attention = "xla"
    model.init_std = 0.02  # std of the normal initialiser
    # Positions per chunk of the loss's output head: >0 never forms the whole [B, L, V] logits
    # (saves ~2·B·L·V·4 bytes, costs one more head matmul); must divide data.seq_len; 0 = off
    model.head_chunk_len = 0
    # How projections order their weight gradient's matmul for XLA (gptjax.projection):
    # "autodiff" (JAX's own) or "smaller_copy" (the order with the fewest transposing copies)
    model.projection_backward = "autodiff"
    # The norms' backward: "autodiff" or "closed_form" (gptjax.norms, fewer full-size passes)
    model.norm_backward = "autodiff"

    config.mesh = mesh = ml_collections.ConfigDict()
    # Sizes within one slice (all devices, unless several TPU slices are joined over DCN)
    mesh.data = -1  # pure data-parallel replicas; -1 = all remaining devices
    mesh.fsdp = 1  # data parallel that also shards parameters and optimizer state
    mesh.tensor = 1  # splits heads / mlp / vocab inside each layer
    # Multi-slice: slices each axis spans (the mesh axis is slices x the size above)
    mesh.dcn_data = 1  # slices holding replicas: one gradient all-reduce per step over DCN
    mesh.dcn_fsdp = 1  # slices sharing the fsdp shards: weight gathers per layer over DCN
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
    # The pairs "builtin" trains on, comma-separated: other_answer (another question's true
    # answer: the hard kind, which teaches) and/or shuffled (the true answer's words shuffled:
    # easy, an SFT model already prefers the true answer). Held-out pairs hold both kinds.
    data.preference_kinds = "other_answer"
    # True: packed rows restart positions and attention at each document (segment_ids);
    # False: plain concatenate-and-chunk, attention crosses document boundaries.
    data.packing = True
    data.verify_shards = True  # sha256 + id range of every shard at start (~1 GB/s per core)
    data.vocab_size = 2048  # sentencepiece vocabulary trained for the run (builtin)
    data.tokenizer_type = "bpe"  # "bpe", "unigram" or "char"
    # "" = train one in the workdir (builtin) or use prepared_dir/tokenizer (prepared); a path
    # given with source="prepared" must be the tokenizer the shards were written with.
    data.tokenizer = ""  # path of a tokenizer dir or its tokenizer.model
    data.seq_len = 128  # tokens per row (L)
    data.validation_fraction = 0.05  # documents held out (builtin; prepare fixes its own)

    config.train = train = ml_collections.ConfigDict()
    train.steps = 800  # optimizer updates
    train.global_batch_size = 16  # rows per update across all devices and micro-batches
    train.grad_accum_steps = 1  # micro-batches per update (lax.scan inside the step)
    train.log_every = 20  # steps between metric lines
    train.eval_every = 200  # steps between validation passes (and one at the end)
    train.eval_batches = 16  # validation batches per pass (0-padded at the end)
    train.eval_batch_size = 16  # rows per validation batch
    # Also evaluate the model before the first step (the untrained loss, ~ln(vocab) nats/token,
    # as nanoGPT prints at iter 0); a finetuning run (init_from) always does.
    train.eval_at_start = False
    train.max_bad_steps = 5  # abort (exit 70) after this many consecutive non-finite steps
    # Weights & Biases, beside metrics.jsonl and TensorBoard (pip install 'gptjax[wandb]'):
    train.wandb_project = ""  # "" = off; else the W&B project the run logs to
    train.wandb_entity = ""  # W&B team or user; "" = your default entity
    train.wandb_run_name = ""  # display name; "" = W&B picks one (the id stays in the workdir)
    # ZeRO-1: AdamW's moments (and the update) split over the `data` replicas instead of
    # held and computed whole on each; the parameters stay whole. Same results.
    train.shard_optimizer = False

    config.optim = optim = ml_collections.ConfigDict()
    optim.peak_lr = 3e-3  # learning rate after warmup
    optim.end_lr_fraction = 0.1  # final lr = peak_lr * this, reached at train.steps
    optim.warmup_steps = 50  # linear warmup from 0
    optim.b1 = 0.9  # Adam first-moment decay
    optim.b2 = 0.95  # Adam second-moment decay
    optim.eps = 1e-8  # Adam denominator epsilon
    optim.weight_decay = 0.1  # decoupled decay on weight matrices only
    optim.clip_norm = 1.0  # global gradient-norm clip

    config.checkpoint = checkpoint = ml_collections.ConfigDict()
    checkpoint.save_every = 200  # steps between checkpoints (and one at the end)
    checkpoint.save_every_minutes = 0.0  # also save when this much time passed; 0 = off
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
    sample.max_new_tokens = 48  # tokens generated per prompt
    sample.temperature = 0.8  # 0 = greedy
    sample.top_k = 40  # 0 = no top-k filter

    config.dpo = dpo = ml_collections.ConfigDict()  # read only when phase="dpo"
    dpo.beta = 0.1  # strength of the pull towards the reference (larger: stay closer)
    dpo.label_smoothing = 0.0  # > 0: conservative DPO, assumes this fraction of flipped labels
    dpo.loss = "sigmoid"  # "sigmoid" (DPO) or "ipo"
    # "model": a frozen copy of the SFT weights runs beside the policy every step;
    # "precomputed": its log-probabilities are computed once before training (saves memory).
    dpo.reference = "model"

    config.finetune = finetune = ml_collections.ConfigDict()  # read only with init_from
    # LoRA: > 0 trains rank-r adapters on the projections below while the init_from weights
    # stay frozen (only the adapters are in the optimizer state and checkpoints); 0 = train all.
    finetune.lora_rank = 0
    finetune.lora_alpha = 16.0  # the adapters' update is scaled by lora_alpha / lora_rank
    # comma-separated projections: q, k, v, o (attention), gate, up, down (MLP), or "all"
    finetune.lora_targets = "all"
    return config
