"""gptjax side by side with TRL: the same SFT then DPO from the same base, scored the same way.

    python tools/compare_trl.py runs/base --conversations 'chats/*.jsonl' --out runs/vs-trl
    (needs `pip install -e '.[compare]'`: trl, torch's CPU build, transformers, datasets)

From a pretrained gptjax workdir (BASE) and one conversation set it:
  1. exports BASE with `gptjax export-hf` (the model TRL starts from);
  2. writes the data both sides read: the conversations (a seeded sample of --limit of them),
     their preference pairs (the true answer over a wrong one, as tools/make_preferences.py
     builds them, unless --preferences is given), and the training splits by gptjax's hash
     split, so TRL trains on exactly the conversations and pairs gptjax trains on;
  3. runs gptjax SFT (configs/tiny_sft.py, init_from BASE) and TRL's SFTTrainer, then gptjax
     DPO and TRL's DPOTrainer, each from its own SFT model (which is also its frozen
     reference), with the same chat template and loss mask (assistant content and its
     <|end|>), AdamW settings, warmup + cosine schedule, clipping, steps and batch;
  4. imports TRL's models with `gptjax import-hf` and scores them with the public
     `gptjax eval`, one call per side: SFT and DPO model on the held-out conversations
     (answer loss, BLEU) and on the held-out pairs with `--preferences --reference SFT`
     (reward accuracy against that side's SFT model, and likelihood accuracy before -> after,
     overall and per pair kind);
  5. prints a markdown table, with each phase's wall time (the whole process, start to exit,
     both sides), and writes it with every figure to OUT/comparison.json.

With --lora-rank R both sides train LoRA adapters instead of every weight: gptjax with
finetune.lora_rank/alpha/targets, TRL with a peft LoraConfig of the same rank, alpha and
target modules (tools/peft_lora.py maps gptjax's projection names onto the export's modules;
GPT-2's fused c_attn gets the rank that trains as many parameters). TRL's model is merged
(`merge_and_unload`) and saved in Hugging Face format before `gptjax import-hf`, so both are
scored by the same `gptjax eval`. Each DPO adapts its own SFT model, its reference with
the adapters off on both sides.

Batches: gptjax packs conversations first-fit into rows of seq_len tokens and a step takes
--batch rows; TRL packs the same way ("bfd", one example per segment) and takes --batch
packed rows, or with --no-trl-packing pads single conversations, as many per step as
gptjax's rows hold on average. For DPO gptjax packs pairs into rows; TRL's DPOTrainer does
not pack, so its batch is the mean number of pairs in gptjax's --batch rows. Both losses are
means over answer tokens (SFT) or over pairs (DPO) of the whole batch.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import time
from pathlib import Path

from gptjax.pair_kinds import DEFAULT_KINDS, PAIR_KINDS

ROOT = Path(__file__).resolve().parent.parent
CONFIGS = ROOT / "configs"
RUNTIME_FIELDS = ("dtype", "remat", "scan_layers", "dropout_rate", "attention")


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("base", help="a pretrained gptjax workdir: both sides start from it")
    p.add_argument("--conversations", required=True, action="append", help="SFT JSONL (glob)")
    p.add_argument("--preferences", action="append", help="DPO JSONL (default: derived)")
    p.add_argument(
        "--kinds",
        default=",".join(DEFAULT_KINDS),
        help="kinds of derived pair, comma-separated, one pair of each per conversation: "
        f"{', '.join(PAIR_KINDS)} (default: {','.join(DEFAULT_KINDS)})",
    )
    p.add_argument("--out", required=True, help="new directory for every run and the table")
    p.add_argument("--limit", type=int, default=0, help="conversations sampled (0 = all)")
    p.add_argument("--validation-fraction", type=float, default=0.05)
    p.add_argument("--sft-steps", type=int, help="default: configs/tiny_sft.py's")
    p.add_argument("--dpo-steps", type=int, help="default: configs/tiny_dpo.py's")
    p.add_argument("--batch", type=int, help="rows per step (default: the configs')")
    p.add_argument("--sft-lr", type=float, help="peak learning rate (default: the config's)")
    p.add_argument("--dpo-lr", type=float, help="peak learning rate (default: the config's)")
    p.add_argument("--sft-warmup", type=int, help="warmup steps (default: the config's)")
    p.add_argument("--dpo-warmup", type=int, help="warmup steps (default: the config's)")
    p.add_argument("--beta", type=float, help="DPO beta (default: configs/tiny_dpo.py's)")
    p.add_argument(
        "--lora-rank", type=int, default=0, help="train LoRA adapters of this rank (0: full)"
    )
    p.add_argument("--lora-alpha", type=float, default=16.0, help="LoRA alpha (scale alpha/r)")
    p.add_argument(
        "--lora-targets",
        default="all",
        help="gptjax projections adapted: all, or a subset of q,k,v,o,gate,up,down (all)",
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--devices", type=int, default=2, help="gptjax's simulated CPU devices (2)")
    # Measured on the shared 2-core host (load ~12): one torch fwd+bwd+AdamW step of 30x100
    # tokens took 7-11 s with 2 threads and 2.2-3.9 s with 1 (OpenMP's barriers wait on a
    # descheduled thread); on an idle host 2 threads may win.
    p.add_argument("--torch-threads", type=int, default=1, help="TRL's torch threads (1)")
    p.add_argument("--max-generate", type=int, default=200, help="held-out answers for BLEU")
    p.add_argument(
        "--repetition-penalty",
        type=float,
        default=1.0,
        help="passed to `gptjax eval` for both sides' BLEU answers (1.0: off)",
    )
    p.add_argument(
        "--no-repeat-ngram-size",
        type=int,
        default=0,
        help="passed to `gptjax eval` for both sides' BLEU answers (0: off)",
    )
    p.add_argument(
        "--no-trl-packing",
        action="store_true",
        help="TRL's SFT pads batches of single conversations (as many per step as gptjax's rows "
        "hold) instead of its padding-free 'bfd' packing, whose block-diagonal attention over "
        "the whole flattened batch is slow without flash attention (CPU)",
    )
    args = p.parse_args(argv)
    args.eval_flags = [
        f"--repetition-penalty={args.repetition_penalty}",
        f"--no-repeat-ngram-size={args.no_repeat_ngram_size}",
    ]
    return args


def phase_settings(args, base_model: dict) -> dict[str, dict]:
    """The matched settings of each phase: gptjax's config files, with the flags applied."""
    from gptjax.config import load_config_file

    settings = {}
    flags = {
        "sft": (args.sft_steps, args.sft_lr, args.sft_warmup),
        "dpo": (args.dpo_steps, args.dpo_lr, args.dpo_warmup),
    }
    for phase, (steps, lr, warmup) in flags.items():
        config = load_config_file(CONFIGS / f"tiny_{phase}.py")
        optim = config.optim
        settings[phase] = {
            "steps": steps or config.train.steps,
            "batch": args.batch or config.train.global_batch_size,
            "peak_lr": lr or optim.peak_lr,
            "warmup_steps": optim.warmup_steps if warmup is None else warmup,
            "end_lr_fraction": optim.end_lr_fraction,
            **{k: optim[k] for k in ("b1", "b2", "eps", "weight_decay", "clip_norm")},
            "seed": args.seed,
            "seq_len": base_model["max_seq_len"],
            "beta": args.beta or config.dpo.beta,
            "label_smoothing": config.dpo.label_smoothing,
            "threads": args.torch_threads,
            "devices": args.devices,
            "remat": config.model.remat,  # TRL's gradient checkpointing follows it
        }
    return settings


def lora_settings(args, model_config) -> dict | None:
    """The matched LoRA settings of both sides (None without --lora-rank): gptjax's flags,
    peft's LoraConfig arguments and both sides' trained parameter counts."""
    if not args.lora_rank:
        return None
    from peft_lora import describe, peft_lora_kwargs, peft_trainable_count

    from gptjax import lora as lora_lib

    targets = lora_lib.parse_targets(args.lora_targets, model_config.activation == "swiglu")
    lora = lora_lib.LoraConfig(args.lora_rank, args.lora_alpha, targets)
    peft = peft_lora_kwargs(lora, model_config)
    return {
        "flags": [
            f"--config.finetune.lora_rank={lora.rank}",
            f"--config.finetune.lora_alpha={lora.alpha}",
            f"--config.finetune.lora_targets={','.join(lora.targets)}",
        ],
        "peft": peft,
        "peft_modules": describe(peft),
        "gptjax_trained": lora_lib.count(lora, model_config),
        "peft_trained": peft_trainable_count(peft, model_config),
    }


def _gptjax(*argv: str) -> list[str]:
    return [sys.executable, "-m", "gptjax.cli", *argv]


def _env(devices: int) -> dict:
    # One simulated host device per core, as `make demo` runs gptjax (docs/benchmarks.md);
    # the caller's other XLA flags are kept.
    kept = [
        flag
        for flag in os.environ.get("XLA_FLAGS", "").split()
        if not flag.startswith("--xla_force_host_platform_device_count")
    ]
    return os.environ | {
        "XLA_FLAGS": " ".join([*kept, f"--xla_force_host_platform_device_count={devices}"]),
        "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
    }


def timed(command: list[str], log: Path, env: dict) -> float:
    """Run `command` with its output in `log`; its wall time in seconds, or exit with its code."""
    print(f"$ {' '.join(command)}  (log: {log})", file=sys.stderr, flush=True)
    started = time.monotonic()
    with log.open("w") as f:
        code = subprocess.call(command, stdout=f, stderr=subprocess.STDOUT, env=env, cwd=ROOT)
    seconds = time.monotonic() - started
    if code:
        tail = log.read_text(errors="replace").splitlines()[-5:]
        raise SystemExit(
            f"compare_trl: {command[:4]} exited {code}; last lines:\n" + "\n".join(tail)
        )
    return seconds


def write_jsonl(path: Path, records) -> None:
    with path.open("w", encoding="utf-8") as f:
        for record in records:
            f.write(json.dumps(record, ensure_ascii=False) + "\n")


def prepare_data(args, out: Path, tokenizer, seq_len: int) -> dict:
    """The conversation and pair files both sides read, and their training splits."""
    from gptjax.chat_template import render
    from gptjax.data.conversations import (
        pack_conversations,
        read_conversations,
        split_conversations,
    )
    from gptjax.data.preferences import (
        pack_preferences,
        preferences_from_conversations,
        split_preferences,
    )
    from gptjax.inference.preference_eval import read_tagged_preferences
    from gptjax.pair_kinds import check_kinds

    conversations = read_conversations(args.conversations, log=lambda s: print(s, file=sys.stderr))
    if args.limit and args.limit < len(conversations):
        keep = sorted(random.Random(args.seed).sample(range(len(conversations)), args.limit))
        conversations = [conversations[i] for i in keep]
    if args.preferences:
        pairs = read_tagged_preferences(args.preferences)
    else:
        kinds = check_kinds([k.strip() for k in args.kinds.split(",") if k.strip()], "--kinds")
        pairs = preferences_from_conversations(conversations, "conversations", kinds)
    data = out / "data"
    data.mkdir(parents=True)
    files = {"conversations": data / "conversations.jsonl", "preferences": data / "pairs.jsonl"}
    write_jsonl(files["conversations"], ({"messages": c} for c in conversations))
    fields = ("messages", "chosen", "rejected")
    # The kind stays in the file gptjax reads (its eval reports figures per kind).
    write_jsonl(
        files["preferences"], ({k: p[k] for k in (*fields, "kind") if k in p} for p in pairs)
    )
    sft_train, _ = split_conversations(conversations, args.validation_fraction)
    dpo_train, dpo_held_out = split_preferences(pairs, args.validation_fraction)
    # gptjax leaves out a pair longer than a row (never truncates one): TRL gets the same pairs.
    packed = pack_preferences(dpo_train, tokenizer, seq_len)
    too_long = set(packed.too_long)
    dpo_train = [p for p in dpo_train if p["where"] not in too_long]
    files["sft_train"], files["dpo_train"] = data / "sft_train.jsonl", data / "dpo_train.jsonl"
    write_jsonl(files["sft_train"], ({"messages": c} for c in sft_train))
    write_jsonl(files["dpo_train"], ({k: p[k] for k in fields} for p in dpo_train))
    sft_rows = pack_conversations(sft_train, tokenizer, seq_len)
    # gptjax's rendering of the first training conversations, which TRL's side must equal.
    rendered = [
        dict(zip(("ids", "mask"), render(tokenizer, c), strict=True)) for c in sft_train[:64]
    ]
    return {
        "files": files,
        "rendered": rendered,
        "pairs_per_row": packed.num_packed / packed.num_rows,
        "conversations_per_row": (sft_rows.num_examples - sft_rows.num_without_targets)
        / sft_rows.num_rows,
        "counts": {
            "conversations": len(conversations),
            "sft_train": len(sft_train),
            "pairs": len(pairs),
            "dpo_train": len(dpo_train),
            "dpo_held_out": len(dpo_held_out),
        },
    }


def gptjax_train(
    phase: str, s: dict, init_from: Path, workdir: Path, data: Path, model: dict, lora=None
):
    overrides = [
        f"--config.model.{k}={v}"
        for k, v in model.items()
        if k not in RUNTIME_FIELDS and v is not None
    ]
    source = "conversations" if phase == "sft" else "preferences"
    return _gptjax(
        "train", "--config", str(CONFIGS / f"tiny_{phase}.py"), "--workdir", str(workdir),
        f"--config.init_from={init_from}", *overrides,
        f"--config.data.{source}={data}", f"--config.data.seq_len={s['seq_len']}",
        f"--config.data.vocab_size={s['tokenizer_vocab']}",
        f"--config.data.validation_fraction={s['validation_fraction']}",
        f"--config.seed={s['seed']}", f"--config.train.steps={s['steps']}",
        f"--config.train.global_batch_size={s['batch']}",
        f"--config.train.eval_every={s['steps']}", "--config.train.eval_batches=2",
        f"--config.train.log_every={max(1, s['steps'] // 10)}",
        f"--config.checkpoint.save_every={s['steps']}", "--config.sample.max_new_tokens=0",
        f"--config.optim.peak_lr={s['peak_lr']}",
        f"--config.optim.warmup_steps={s['warmup_steps']}",
        f"--config.optim.end_lr_fraction={s['end_lr_fraction']}",
        f"--config.optim.b1={s['b1']}", f"--config.optim.b2={s['b2']}",
        f"--config.optim.eps={s['eps']}", f"--config.optim.weight_decay={s['weight_decay']}",
        f"--config.optim.clip_norm={s['clip_norm']}",
        *([f"--config.dpo.beta={s['beta']}"] if phase == "dpo" else []),
        *(lora["flags"] if lora else []),
    )  # fmt: skip


def trl_train(phase: str, s: dict, model_dir: Path, out: Path, train_file: Path, log: Path):
    spec = s | {"model": str(model_dir), "out": str(out), "train": str(train_file)}
    spec_file = log.with_suffix(".spec.json")
    spec_file.write_text(json.dumps(spec, indent=2))
    command = [sys.executable, str(ROOT / "tools" / "trl_side.py"), phase, str(spec_file)]
    seconds = timed(command, log, _env(s["devices"]))
    report = json.loads(log.read_text().strip().splitlines()[-1])
    return seconds, report


ROWS = (  # (column title, key in a model's results, format)
    ("held-out answer loss (nats/token)", "answer_loss", ".3f"),
    ("answer token accuracy", "answer_accuracy", ".3f"),
    ("BLEU (greedy answers)", "bleu", ".2f"),
    ("reward accuracy", "reward_accuracy", ".3f"),
    ("likelihood accuracy", "likelihood_accuracy", ".3f"),
    ("examples per step", "examples_per_step", ".1f"),
    ("trained parameters", "trained_parameters", ",d"),
    ("wall time (s, whole process)", "wall_seconds", ".1f"),
)
KIND_ROWS = (  # per pair kind, when the pairs have more than one
    ("reward accuracy [{}]", "reward_accuracy", ".3f"),
    ("likelihood accuracy [{}]", "likelihood_accuracy", ".3f"),
)


def table_rows(results: dict[str, dict]) -> list[tuple[str, str, str]]:
    """ROWS, then KIND_ROWS for each pair kind when the held-out pairs have more than one."""
    kinds = [
        kind
        for kind in dict.fromkeys(k for r in results.values() for k in r.get("by_kind", {}))
        if kind != "all"  # gptjax eval's figures over every pair: the rows above
    ]
    if len(kinds) < 2:
        return list(ROWS)
    rows = list(ROWS)
    for kind in kinds:
        rows += [(title.format(kind), f"{kind}:{key}", fmt) for title, key, fmt in KIND_ROWS]
    return rows


def _figure(figures: dict, key: str):
    kind, _, name = key.rpartition(":")
    return figures.get("by_kind", {}).get(kind, {}).get(name) if kind else figures.get(key)


def markdown_table(results: dict[str, dict]) -> str:
    """One column per model (gptjax SFT, TRL SFT, gptjax DPO, TRL DPO), one row per figure;
    a figure a model has no value for is "–" (reward accuracy of an SFT model: its
    reference would be itself)."""
    names = list(results)
    lines = ["| | " + " | ".join(names) + " |", "|---|" + "---:|" * len(names)]
    for title, key, fmt in table_rows(results):
        values = [_figure(results[n], key) for n in names]
        cells = [format(v, fmt) if v is not None else "–" for v in values]
        lines.append(f"| {title} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def run(args) -> dict:
    from gptjax.errors import ConfigError
    from gptjax.inference.load import load_model
    from gptjax.model import ModelConfig, count_params

    out = Path(args.out)
    if out.exists() and any(out.iterdir()):
        raise ConfigError(f"--out {out} is not empty; give a new directory")
    out.mkdir(parents=True, exist_ok=True)
    base = load_model(args.base)
    model = dict(base.metadata["model"])
    model_config = ModelConfig(**model)
    settings = phase_settings(args, model)
    lora = lora_settings(args, model_config)
    if lora:
        print(f"LoRA: peft adapts {lora['peft_modules']}", file=sys.stderr)
    data = prepare_data(args, out, base.tokenizer, model["max_seq_len"])
    for s in settings.values():
        s["validation_fraction"] = args.validation_fraction
        s["tokenizer_vocab"] = base.tokenizer.vocab_size
    # TRL's DPOTrainer pads pairs instead of packing them: the same pairs per step.
    settings["dpo"]["trl_batch"] = max(1, round(settings["dpo"]["batch"] * data["pairs_per_row"]))
    settings["sft"]["packing"] = not args.no_trl_packing
    if args.no_trl_packing:  # padded batches of single conversations: as many as gptjax's rows hold
        per_row = data["conversations_per_row"]
        settings["sft"]["trl_batch"] = max(1, round(settings["sft"]["batch"] * per_row))
    settings["sft"]["rendered"] = data["rendered"]
    env, files = _env(args.devices), data["files"]
    print(json.dumps(data["counts"]), file=sys.stderr)

    base_hf = out / "base-hf"
    timed(_gptjax("export-hf", str(base.workdir), "--out", str(base_hf)), out / "export.log", env)
    results: dict[str, dict] = {}
    names = model_names(bool(lora))
    trained = {"gptjax": lora["gptjax_trained"] if lora else count_params(model_config)}
    start = {"gptjax": Path(args.base), "trl": base_hf}
    for phase, train_file, source in (
        ("sft", files["sft_train"], files["conversations"]),
        ("dpo", files["dpo_train"], files["preferences"]),
    ):
        s = settings[phase]
        work = out / f"gptjax-{phase}"
        command = gptjax_train(phase, s, start["gptjax"], work, source, model, lora)
        seconds = timed(command, out / f"gptjax-{phase}.log", env)
        per_row = data["pairs_per_row" if phase == "dpo" else "conversations_per_row"]
        gptjax_name, trl_name = names[phase]
        results[gptjax_name] = {
            "wall_seconds": seconds,
            "workdir": str(work),
            "trained_parameters": trained["gptjax"],
        }
        trl_dir = out / f"trl-{phase}-hf"
        trl_s = s | ({"batch": s["trl_batch"]} if "trl_batch" in s else {})
        if lora:
            trl_s |= {"lora": lora["peft"], "lora_trainable": lora["peft_trained"]}
        seconds, report = trl_train(
            phase, trl_s, start["trl"], trl_dir, train_file, out / f"trl-{phase}.log"
        )
        trl_work = out / f"trl-{phase}"
        timed(
            _gptjax("import-hf", str(trl_dir), "--workdir", str(trl_work)),
            out / f"import-{phase}.log",
            env,
        )
        results[trl_name] = {
            "wall_seconds": seconds,
            "workdir": str(trl_work),
            "trl": report,
            "examples_per_step": report["examples_per_step"],
            "trained_parameters": report["trained_parameters"],
        }
        results[gptjax_name]["examples_per_step"] = s["batch"] * per_row
        start = {"gptjax": work, "trl": trl_dir}

    for side in (0, 1):
        sft, dpo = results[names["sft"][side]], results[names["dpo"][side]]
        scored = score_side(sft["workdir"], dpo["workdir"], files, args, settings["dpo"], out)
        sft |= scored[0]
        dpo |= scored[1]
    table = markdown_table({n: results[n] for n in (*names["sft"], *names["dpo"])})
    shown = {
        phase: {k: v for k, v in s.items() if k != "rendered"} for phase, s in settings.items()
    }
    report = {"settings": shown, "counts": data["counts"], "results": results, "table": table}
    if lora:
        report["lora"] = lora
    (out / "comparison.json").write_text(json.dumps(report, indent=2, default=str))
    return report


def model_names(lora: bool) -> dict[str, tuple[str, str]]:
    """The table's column names per phase: (gptjax's, TRL's)."""
    if lora:
        return {p: (f"gptjax LoRA {p}", f"peft+TRL LoRA {p}") for p in ("sft", "dpo")}
    return {p: (f"gptjax {p}", f"TRL {p}") for p in ("sft", "dpo")}


def score_side(sft_dir: str, dpo_dir: str, files: dict, args, dpo: dict, out: Path):
    """One side's SFT and DPO model scored by one `gptjax eval` call: held-out conversations,
    and held-out pairs against the SFT model as reference (the SFT model's own reward figures,
    against itself, are dropped: they are zero by definition)."""
    side = Path(dpo_dir).name
    eval_json = out / f"eval-{side}.json"
    timed(
        _gptjax(
            "eval", sft_dir, dpo_dir,
            "--conversations", str(files["conversations"]),
            "--preferences", str(files["preferences"]),
            "--reference", sft_dir, "--beta", str(dpo["beta"]),
            "--validation-fraction", str(args.validation_fraction),
            "--max-generate", str(args.max_generate), "--json", str(eval_json),
            *args.eval_flags,
        ),
        out / f"eval-{side}.log", _env(args.devices),
    )  # fmt: skip
    return [
        _figures(result, with_rewards=i == 1)
        for i, result in enumerate(json.loads(eval_json.read_text()))
    ]


def _figures(result: dict, with_rewards: bool) -> dict:
    keys = ("answer_loss", "answer_accuracy", "answer_bits_per_byte", "bleu", "exact_match")
    rewards = ("reward_accuracy", "reward_margin")
    by_kind = {
        kind: {k: v for k, v in figures.items() if with_rewards or k not in rewards}
        for kind, figures in result["preferences"].items()
    }
    return (
        {key: result[key] for key in keys}
        | by_kind["all"]
        | {
            "by_kind": by_kind,
            "pairs_too_long": result["pairs_too_long"],
            "repetition": result.get("repetition"),
        }
    )


def main(argv=None) -> int:
    from gptjax.errors import GptjaxError

    args = parse_args(argv)
    try:
        report = run(args)
    except GptjaxError as error:  # one line and its exit code, as the gptjax CLI does
        print(f"compare_trl: error: {error}", file=sys.stderr)
        return error.exit_code
    print(json.dumps(report["counts"]))
    print(report["table"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
