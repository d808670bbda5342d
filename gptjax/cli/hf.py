"""`gptjax import-hf` and `gptjax export-hf`: their flags and their bodies."""

from __future__ import annotations

from gptjax.errors import ConfigError


def add_parsers(verbs) -> None:
    imp = verbs.add_parser(
        "import-hf",
        help="turn a Hugging Face GPT-2/Llama directory into a gptjax checkpoint",
        description="Read config.json, the weights (safetensors, or pytorch_model.bin with "
        "torch) and the tokenizer of a Hugging Face model directory and write WORKDIR/"
        "checkpoints/0; then train from it with --config.init_from=WORKDIR or sample from it.",
    )
    imp.add_argument("model_dir", help="Hugging Face model directory (config.json + weights)")
    imp.add_argument("--workdir", required=True, help="new workdir for the checkpoint")
    imp.add_argument(
        "--add-chat-tokens",
        action="store_true",
        help="append the chat tokens (<|system|> <|user|> <|assistant|> <|end|>) the "
        "tokenizer lacks, for SFT; needs embedding rows for them (see --vocab-size)",
    )
    imp.add_argument(
        "--vocab-size",
        type=int,
        help="embedding rows, when more than the model's (new rows start as the mean "
        "embedding), e.g. 50304 for GPT-2 with chat tokens",
    )
    imp.add_argument("--mesh", help="device mesh to place the weights on (default fsdp=-1)")
    imp.set_defaults(run=_import_hf)
    exp = verbs.add_parser(
        "export-hf",
        help="write a checkpoint as a Hugging Face model directory",
        description="Write config.json, safetensors weights and the tokenizer, loadable with "
        "transformers.AutoModelForCausalLM.from_pretrained(DIR). A LoRA run's adapters are "
        "merged into the weights (or written alone in peft's format: --lora-adapter).",
    )
    exp.add_argument("workdir", help="a workdir (or WORKDIR/checkpoints/STEP)")
    exp.add_argument("--out", required=True, help="new directory for the Hugging Face model")
    exp.add_argument("--step", type=int, help="checkpoint step (default: the latest)")
    exp.add_argument("--dtype", default="float32", choices=("float32", "bfloat16"))
    exp.add_argument(
        "--max-shard-gb", type=float, default=5.0, help="largest safetensors file, GB (5)"
    )
    exp.add_argument(
        "--lora-adapter",
        action="store_true",
        help="a LoRA run: write only its adapters as a peft adapter directory "
        "(adapter_config.json + adapter_model.safetensors) instead of the merged model",
    )
    exp.set_defaults(run=_export_hf)


def _import_hf(args) -> None:
    from gptjax.hf.importer import import_hf
    from gptjax.inference.load import parse_mesh

    mesh = parse_mesh(args.mesh) if args.mesh else None
    result = import_hf(
        args.model_dir,
        args.workdir,
        add_chat_tokens=args.add_chat_tokens,
        vocab_size=args.vocab_size,
        mesh=mesh,
    )
    for line in result.describe():
        print(line)


def _export_hf(args) -> None:
    from gptjax.hf.exporter import export_hf

    if args.max_shard_gb <= 0:
        raise ConfigError(f"--max-shard-gb must be positive, got {args.max_shard_gb}")
    if args.lora_adapter:
        from gptjax.hf.lora_export import export_lora_adapter

        files = export_lora_adapter(args.workdir, args.out, step=args.step)
        print(f"wrote the LoRA adapters of {args.workdir} as a peft adapter to {args.out}:")
        print("  " + " ".join(files))
        return
    result = export_hf(
        args.workdir,
        args.out,
        step=args.step,
        dtype=args.dtype,
        max_shard_bytes=int(args.max_shard_gb * 2**30),
    )
    print(f"wrote a {result.family} model ({result.tensors} tensors) to {result.out}:")
    print("  " + " ".join(result.files))
