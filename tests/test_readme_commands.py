"""README.md is executable: every command of its ```bash blocks and its ```python blocks runs
here, on tiny models, so a README command that stops working fails CI.

Every README command has exactly one decision in DECISIONS: `Run` (verbatim), `Shrink`
(verbatim with listed arguments appended, where the verbatim command would train for hours
on 2 CPU cores) or `Exclude` (with the reason). A README command without a decision, or a
decision for a command the README no longer has, fails `test_every_readme_command_has_one_
decision` (fast tier), so the README and this table cannot drift apart.

The commands run in README order through bash, in one directory laid out like the repository
(configs/, tools/, tests/ linked), so the runs/demo the recipe pretrains is the runs/demo that
`gptjax sample` reads later. `gptjax` and `python` there are this interpreter (small scripts
first on PATH: `python -m gptjax.cli` is the `gptjax` entry point); a `Shrink`'s arguments are
appended to every `gptjax` and `python` call of its command. Inputs the README assumes but no
README command makes (input.txt, a text corpus, Hugging Face GPT-2 and Llama directories) are
written by the `layout` fixture.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import pytest
from small_run import LLAMA_STYLE, SMALL_MODEL, SMALL_VOCAB, subprocess_env

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
BLOCK = re.compile(r"^```(bash|python)\n(.*?)^```", re.S | re.M)
COMPOUND = {"until": "done", "while": "done", "for": "done", "if": "fi"}


@dataclass(frozen=True)
class Command:
    key: str  # the command as DECISIONS names it: comments dropped, whitespace collapsed
    line: int  # README line of its first line
    language: str  # "bash" or "python"
    script: str  # what runs: the bash command, or the whole Python block


def _without_comment(line: str) -> str:
    """`line` up to a shell comment (a `#` at a word start outside quotes)."""
    quote = None
    for i, char in enumerate(line):
        if quote:
            quote = None if char == quote else quote
        elif char in "'\"":
            quote = char
        elif char == "#" and (i == 0 or line[i - 1].isspace()):
            return line[:i]
    return line


def _bash_commands(body: str, first_line: int) -> list[Command]:
    """Continuation lines joined, comments dropped, a compound (until ... done) kept whole."""
    commands, pending, start, closers = [], [], 0, []
    for offset, raw in enumerate(body.splitlines()):
        text = _without_comment(raw).rstrip()
        if not pending and not closers:
            start = first_line + offset
        continued = text.endswith("\\")
        if text.strip():
            pending.append(text.removesuffix("\\").strip())
        if continued:
            continue
        words = text.split()
        if words and words[0] in COMPOUND:
            closers.append(COMPOUND[words[0]])
        elif words and closers and words[0] == closers[-1]:
            closers.pop()
        if pending and not closers:
            if pending[0].split()[0] in COMPOUND:  # one line each: `do`, `done` need them
                key = "\n".join(" ".join(line.split()) for line in pending)
            else:
                key = " ".join(" ".join(pending).split())
            commands.append(Command(key, start, "bash", key))
            pending = []
    assert not pending and not closers, f"README line {start}: unfinished command"
    return commands


def readme_commands(text: str | None = None) -> list[Command]:
    text = README.read_text() if text is None else text
    commands = []
    for match in BLOCK.finditer(text):
        language, body = match.groups()
        first_line = text.count("\n", 0, match.start(2)) + 1
        if language == "bash":
            commands += _bash_commands(body, first_line)
        else:  # a Python block is one program, named by its first line
            key = f"python block: {body.splitlines()[0]}"
            commands.append(Command(key, first_line, "python", body))
    return commands


# --- the decisions -------------------------------------------------------------------------


@dataclass(frozen=True)
class Run:
    """Run verbatim; then every `expect` string is in its output, every `makes` path exists."""

    expect: tuple[str, ...] = ()
    makes: tuple[str, ...] = ()
    stdin: str = ""
    before: tuple[tuple[str, str], ...] = ()  # (run, copy): workdirs copied before it runs
    extra: tuple[str, ...] = ()  # only a Shrink appends arguments


@dataclass(frozen=True)
class Shrink(Run):
    """Run with `extra` appended to each of its gptjax/python calls, and say why."""

    why: str = ""


@dataclass(frozen=True)
class Exclude:
    reason: str


# The shrinking arguments, all of them: a run of a few steps on a 2-layer, 64-wide model.
SHORT_TRAIN = (
    "--config.train.steps=4",
    "--config.train.eval_every=4",
    "--config.train.eval_batches=1",
    "--config.train.eval_batch_size=8",
    "--config.train.global_batch_size=8",
    "--config.train.grad_accum_steps=1",
    "--config.train.log_every=2",
    "--config.optim.warmup_steps=1",
    "--config.checkpoint.save_every=4",
    "--config.sample.max_new_tokens=0",
)
SMALL = (*SMALL_MODEL, *SMALL_VOCAB, *SHORT_TRAIN)
# The chat phases: 128-token rows (most built-in preference pairs need more than 64).
SMALL_CHAT = (*SMALL, "--config.data.seq_len=128", "--config.model.max_seq_len=128")
# GPT-2 small computes in bfloat16 with remat: float32 and no remat are faster on CPU.
SMALL_GPT2 = (
    *SMALL,
    "--config.model.num_heads=4",
    "--config.model.dtype=float32",
    "--config.model.remat=none",
)
# The shape of the Hugging Face GPT-2 the layout fixture saves as hf/gpt2 (see _hf_gpt2).
HF_GPT2_SHAPE = (
    "--config.model.vocab_size=512",
    "--config.data.vocab_size=512",
    "--config.model.num_layers=2",
    "--config.model.num_heads=4",
    "--config.model.embed_dim=32",
    "--config.model.mlp_dim=128",
    "--config.model.max_seq_len=64",
    "--config.data.seq_len=64",
)
SHORT_BENCH = ("--steps", "2", "--warmup", "1")
# configs/nanogpt_cpu.py at the small size: its 6 heads do not divide 64.
SMALL_NANOGPT = (*SMALL_MODEL, *SMALL_VOCAB, "--config.model.num_heads=4")
PRETRAIN = "a full pretraining run takes minutes to hours on 2 CPU cores"
TPU_SIZED = "a TPU-sized model: 124M-1B parameters, days on 2 CPU cores"

DECISIONS: dict[str, Run | Exclude] = {
    # Quickstart
    "make demo": Exclude(
        "15 minutes at full size; its steps are the recipe block's commands, run below, and "
        "tests/test_end_to_end.py runs its pretraining at full size"
    ),
    "make test": Exclude("CI runs it (.ci/run); this test is part of it"),
    # Training
    "gptjax train --config configs/tiny.py --workdir runs/tiny": Shrink(
        extra=SMALL, why=PRETRAIN, makes=("runs/tiny/checkpoints/4",)
    ),
    'XLA_FLAGS="$XLA_FLAGS --xla_force_host_platform_device_count=8" gptjax train --config '
    "configs/tiny.py "
    "--workdir runs/tiny4 --config.model.num_layers=4 --config.mesh.data=2 "
    "--config.mesh.fsdp=4": Shrink(extra=SMALL, why=PRETRAIN, expect=("'data': 2, 'fsdp': 4",)),
    "gptjax train --config configs/tiny.py --workdir runs/x --print-config": Run(
        expect=("num_layers: 4",)
    ),
    "gptjax train --config tiny --workdir runs/tiny --print-config": Run(
        expect=("phase: pretrain",)
    ),
    "gptjax configs": Run(expect=("tiny_sft ",)),
    "gptjax prepare --source 'text:input.txt,docs=chunks:65536' --validation-tail 0.1 "
    "--tokenizer-type char --vocab-size 343 --out data/char": Run(
        expect=("--config.model.vocab_size=384",), makes=("data/char/manifest.json",)
    ),
    "gptjax train --config configs/char_baby.py --workdir runs/char_baby "
    "--config.data.prepared_dir=data/char": Shrink(
        extra=(
            *SHORT_TRAIN,
            "--config.model.num_layers=2",
            "--config.model.embed_dim=64",
            "--config.model.num_heads=2",
            "--config.model.mlp_dim=128",
            "--config.data.seq_len=64",
            "--config.model.max_seq_len=64",
        ),
        why="nanoGPT's baby GPT: 5,000 steps of batch 64, days on 2 CPU cores",
    ),  # fmt: skip
    "gptjax eval runs/char_baby --text prepared:data/char": Shrink(
        extra=("--max-batches", "1"), why="1,895 held-out rows of 256 tokens", expect=("data/char",)
    ),
    "gptjax train --config configs/gpt2_124m.py --workdir runs/gpt2 --dry-run "
    "--device-memory 16": Run(expect=("WARNING: the estimated",)),
    "gptjax train --config configs/llama_1b.py --workdir x --dry-run --devices 32 "
    "--no-compile": Run(expect=("(analytic)",)),
    # Speed
    "gptjax bench --config configs/nanogpt_cpu.py": Shrink(
        extra=(*SHORT_BENCH, *SMALL_NANOGPT),
        why="20 timed steps of a 10M-parameter model",
        expect=("tokens/s",),
    ),
    "gptjax bench --config configs/tiny.py --data config --workdir runs/b --json bench.json": (
        Shrink(
            extra=(*SHORT_BENCH, *SMALL_VOCAB),
            why="the 2048-piece tokenizer, 20 steps",
            makes=("bench.json",),
        )
    ),  # fmt: skip
    "python tools/bench_torch.py --config configs/nanogpt_cpu.py": Shrink(
        extra=("--rounds", "1", "--steps", "1", "--warmup", "1", *SMALL_NANOGPT),
        why="3 alternating rounds of 10 steps per side",
    ),
    "python tools/bench_torch.py --config configs/nanogpt_cpu.py --reference both": Shrink(
        extra=("--rounds", "1", "--steps", "1", "--warmup", "1", *SMALL_NANOGPT),
        why="3 alternating rounds of 10 steps per side, three models",
    ),
    "python tools/ab_step.py --config configs/nanogpt_cpu.py --b train.shard_optimizer=true": (
        Shrink(
            extra=("--rounds", "1", "--steps", "1", "--warmup", "1", *SMALL_NANOGPT),
            why="3 alternating rounds of a 10M-parameter model's steps",
            expect=("ratio",),
        )
    ),  # fmt: skip
    "python tools/bench_sweep.py --config configs/nanogpt_cpu.py --plot sweep.png": Shrink(
        extra=(
            "--seq",
            "32",
            "64",
            "--vocab",
            "512",
            "--tokens",
            "256",
            "--steps",
            "1",
            "--warmup",
            "0",
            *SMALL_NANOGPT,
        ),
        why="13 points of up to 4,096 tokens and 131,072 words, both sides in fresh processes",
        makes=("sweep.png",),
    ),  # fmt: skip
    "python tools/profile_step.py --config configs/nanogpt_cpu.py": Shrink(
        extra=("--steps", "1", *SMALL_NANOGPT), why="traces 3 steps of 6 layers"
    ),
    "python tools/bench_scaling.py --config configs/nanogpt_cpu.py": Shrink(
        extra=(
            "--seq",
            "64",
            "--tokens",
            "128",
            "--layers",
            "1",
            "--steps",
            "1",
            "--config.model.num_layers=1",
            *SMALL_VOCAB,
        ),
        why="7 benches up to 24 layers and 2048-token rows",
    ),
    # The recipe
    "gptjax train --config configs/tiny.py --workdir runs/demo": Shrink(
        extra=SMALL_CHAT, why=PRETRAIN
    ),
    "gptjax train --config configs/tiny_sft.py --workdir runs/demo-sft "
    "--config.init_from=runs/demo": Shrink(
        extra=SMALL_CHAT, why="300 steps", expect=("starting from the parameters of runs/demo",)
    ),
    "gptjax train --config configs/tiny_dpo.py --workdir runs/demo-dpo "
    "--config.init_from=runs/demo-sft": Shrink(extra=SMALL_CHAT, why="150 steps"),
    "gptjax eval runs/demo runs/demo-sft runs/demo-dpo": Shrink(
        extra=("--max-batches", "1", "--max-generate", "2", "--max-new-tokens", "4"),
        why="every held-out batch and 200 answers, three models",
        expect=("answer loss (nats/token)", "BLEU"),
    ),
    "gptjax train --config configs/tiny_dpo.py --workdir runs/demo-dpo-hard "
    "--config.init_from=runs/demo-sft --config.data.preference_kinds=other_answer": Shrink(
        extra=SMALL_CHAT, why="150 steps", expect=("other_answer",)
    ),
    "gptjax eval runs/demo-sft runs/demo-dpo --preferences builtin": Shrink(
        extra=("--max-batches", "1", "--max-generate", "2", "--max-new-tokens", "4"),
        why="every held-out batch and 200 answers, two models",
        expect=("likelihood accuracy",),
    ),
    "gptjax chat runs/demo-dpo": Run(stdin="What does `json.dumps` do?\n/quit\n"),
    "gptjax sample runs/demo-sft --prompt 'What does `json.dumps` do?' --temperature 0": Run(
        # The default budget (128) is the whole 128-token context: capped, with one note.
        expect=("--- What does `json.dumps` do?\n", "note: --max-new-tokens 128 capped to ")
    ),
    "gptjax sample runs/demo --prompt 'The json module' --top-p 0.9": Run(
        expect=("---\nThe json module",)
    ),
    "gptjax chat runs/demo-sft --system 'Answer in one sentence.'": Run(
        stdin="What does `os.path.join` do?\n/quit\n"
    ),
    "python block: import gptjax": Run(),
    # Preemption, checkpoints
    "until gptjax train --config configs/gpt2_124m.py --workdir runs/gpt2; do\n"
    "[ $? -eq 75 ] || break\n"
    "done": Shrink(extra=SMALL_GPT2, why=TPU_SIZED, makes=("runs/gpt2/checkpoints/4",)),
    "gptjax checkpoints runs/gpt2": Run(expect=("4",)),
    "gptjax checkpoints runs/gpt2 --tree --step 2000": Shrink(
        extra=("--step", "4"), why="the shortened run above saved step 4, not 2000"
    ),
    "gptjax checkpoints runs/gpt2 --verify": Run(),
    "gptjax train ... --config.checkpoint.resume_step=2000": Exclude(
        "`...` stands for the run's own command; resume_step is tested by "
        "tests/test_checkpoint_recovery.py"
    ),
    "gptjax train --config configs/tiny.py --workdir runs/sft --config.phase=sft "
    "--config.init_from=runs/demo": Shrink(extra=SMALL_CHAT, why=PRETRAIN),
    "gptjax checkpoints runs/x": Run(before=(("runs/tiny", "runs/x"),)),
    "gptjax train ... --config.checkpoint.resume_step=110": Exclude(
        "`...` stands for the damaged run's own command; the roll-back is tested by "
        "tests/test_checkpoint_recovery.py"
    ),
    # Multi-host
    "gptjax train --config configs/gpt2_124m.py --workdir /shared/runs/gpt2 "
    "--coordinator_address 10.0.0.2:8476 --num_processes 2 --process_id 0": Exclude(
        "needs a second host at 10.0.0.2; the flags over loopback: tests/test_multihost.py"
    ),
    "gptjax train --config configs/gpt2_124m.py --workdir /shared/runs/gpt2 "
    "--coordinator_address 10.0.0.2:8476 --num_processes 2 --process_id 1": Exclude(
        "needs a second host at 10.0.0.2; the flags over loopback: tests/test_multihost.py"
    ),
    "python block: from flax import nnx": Run(),
    # Hugging Face
    "pip install -e '.[hf]' huggingface_hub": Exclude(
        "installs packages; CI installs .[test], which holds .[hf]"
    ),
    "hf download openai-community/gpt2 config.json model.safetensors tokenizer.json "
    "tokenizer_config.json --local-dir hf/gpt2": Exclude(
        "downloads from the hub; the layout fixture saves a small random GPT-2 as hf/gpt2"
    ),
    "gptjax import-hf hf/gpt2 --workdir runs/gpt2-hf": Run(makes=("runs/gpt2-hf/checkpoints/0",)),
    'gptjax sample runs/gpt2-hf --prompt "The meaning of life is" --temperature 0': Run(
        expect=("---\nThe meaning of life is",)
    ),
    "gptjax train --config configs/gpt2_124m.py --workdir runs/gpt2-ft "
    "--config.init_from=runs/gpt2-hf": Shrink(
        extra=(
            *SHORT_TRAIN,
            "--config.model.dtype=float32",
            "--config.model.remat=none",
            *HF_GPT2_SHAPE,
        ),
        why=f"{TPU_SIZED}; the shape is hf/gpt2's, a small random GPT-2",
    ),  # fmt: skip
    "gptjax export-hf runs/gpt2-ft --out hf/gpt2-ft": Run(
        makes=("hf/gpt2-ft/config.json", "hf/gpt2-ft/model.safetensors")
    ),
    'python -c "from transformers import AutoModelForCausalLM as M; '
    "M.from_pretrained('hf/gpt2-ft')\"": Run(),
    # LoRA
    "python block: config.finetune.lora_rank = 16          # r; 0 = full finetune (the "
    "default)": Exclude(
        "a config file's lines, not a program; the same fields run as --config overrides in the "
        "LoRA commands below"
    ),
    "gptjax import-hf hf/llama --workdir runs/llama-hf": Run(
        makes=("runs/llama-hf/checkpoints/0",)
    ),
    "gptjax train --config configs/tiny_sft.py --workdir runs/llama-lora-sft "
    "--config.init_from=runs/llama-hf --config.finetune.lora_rank=8 "
    "--config.optim.peak_lr=3e-3": Shrink(
        extra=SHORT_TRAIN, why="300 steps", makes=("runs/llama-lora-sft/checkpoints/4",)
    ),
    "gptjax train --config configs/tiny_dpo.py --workdir runs/llama-lora-dpo "
    "--config.init_from=runs/llama-lora-sft --config.finetune.lora_rank=4": Shrink(
        extra=SHORT_TRAIN, why="150 steps", expect=("reward accuracy",)
    ),
    "gptjax eval runs/llama-hf runs/llama-lora-sft runs/llama-lora-dpo --conversations "
    "builtin": Shrink(
        extra=("--max-batches", "1", "--max-generate", "2", "--max-new-tokens", "4"),
        why="every held-out batch and 200 answers, three models",
        expect=("answer loss (nats/token)",),
    ),
    "gptjax export-hf runs/llama-lora-sft --out hf/sft-merged": Run(
        makes=("hf/sft-merged/model.safetensors",)
    ),
    "gptjax export-hf runs/llama-lora-sft --out hf/sft-adapter --lora-adapter": Run(
        makes=("hf/sft-adapter/adapter_config.json", "hf/sft-adapter/adapter_model.safetensors")
    ),
    "gptjax import-hf hf/gpt2 --workdir runs/gpt2-chat --add-chat-tokens --vocab-size 50304": (
        Run(makes=("runs/gpt2-chat/checkpoints/0",))
    ),
    # Data
    "gptjax prepare --source 'text:my_corpus/**/*.txt' --vocab-size 8192 --out data/mine": Run(
        makes=("data/mine/manifest.json",)
    ),
    "gptjax train --config configs/tiny.py --workdir runs/mine --config.data.source=prepared "
    "--config.data.prepared_dir=data/mine --config.model.vocab_size=8192": Shrink(
        extra=(*SMALL_MODEL, *SHORT_TRAIN), why=PRETRAIN
    ),
    "gptjax prepare --source text:novel.txt --validation-tail 0.1 --tokenizer-type char "
    "--vocab-size 347 --out data/novel": Run(expect=("--config.model.vocab_size=384",)),
    "gptjax prepare --source 'tfds:wikipedia/20230601.en,split=train,field=text,"
    "data_dir=/data/tfds' --vocab-size 32768 --out data/wiki": Exclude(
        "needs a TFDS build of Wikipedia (20 GB); tfds: sources are tested on a local dataset "
        "in tests/test_sources.py"
    ),
    "gptjax train --config configs/gpt2_124m.py --workdir runs/gpt2 --config.data.source="
    "prepared --config.data.prepared_dir=data/wiki": Exclude("trains on data/wiki, above"),
    "gptjax tokenizer train --source 'text:my_corpus/*.txt' --vocab-size 8192 --out tok/": Run(
        expect=("8192 pieces",)
    ),
    'gptjax tokenizer encode --tokenizer tok/ "Hello, world"': Run(),
    "gptjax tokenizer decode --tokenizer tok/ 2 1083 44 3": Run(),
    # Contributing
    "make test-fast": Exclude("a subset of make test, which CI runs"),
    # " passed": the copy has no pyproject.toml, so test_model.py's slow marks add a warning.
    ".venv/bin/python -m pytest tests/test_model.py::test_causality_by_gradient -q": Run(
        expect=("2 passed",)
    ),
    "make lint": Exclude("CI runs it before make test (.ci/run)"),
    "make format": Exclude("rewrites the working tree; make lint checks the same tools"),
}

# Training, evaluating, benching: ~15 s each on 2 cores; everything else a few seconds.
COMMAND_TIMEOUT = 300


def test_every_readme_command_has_one_decision():
    keys = [command.key for command in readme_commands()]
    undecided = [key for key in keys if key not in DECISIONS]
    assert not undecided, (
        "README commands with no decision in tests/test_readme_commands.py DECISIONS (run "
        f"verbatim, shrink or exclude with a reason): {undecided}"
    )
    stale = [key for key in DECISIONS if key not in keys]
    assert not stale, f"DECISIONS for commands the README no longer has: {stale}"
    for key, decision in DECISIONS.items():
        if isinstance(decision, Shrink):
            assert decision.extra and decision.why, key
            assert all(" " not in arg for arg in decision.extra), key  # the shim splits words
        elif isinstance(decision, Exclude):
            assert decision.reason, key
        else:
            assert not decision.extra, f"{key}: a verbatim Run appends nothing"


def test_the_extraction_reads_continuations_comments_and_compounds():
    text = (
        "```bash\n"
        "# a comment line\n"
        "gptjax a --x 'q # not a comment' \\\n"
        "    --y 1   # a comment\n"
        "until gptjax b; do\n"
        "  [ $? -eq 75 ] || break  # why\n"
        "done\n"
        "```\n\n```python\nimport gptjax\nprint(1)\n```\n"
    )
    assert [(c.key, c.line, c.language) for c in readme_commands(text)] == [
        ("gptjax a --x 'q # not a comment' --y 1", 3, "bash"),
        ("until gptjax b; do\n[ $? -eq 75 ] || break\ndone", 5, "bash"),
        ("python block: import gptjax", 11, "python"),
    ]


def test_the_python_api_block_stays_a_few_lines():
    """The README's first Python block is the API at a glance (its issue asked for ~4 lines),
    reading the workdir the recipe's SFT step writes."""
    block = next(c for c in readme_commands() if c.key == "python block: import gptjax")
    assert block.script.count("\n") <= 6 and '"runs/demo-sft"' in block.script


# --- the layout and the runs ---------------------------------------------------------------

SHIM = '#!/bin/sh\nexec "$README_PYTHON" {module}"$@" $README_EXTRA\n'


def _distinct_chars_text(count: int, size: int) -> str:
    """`size` characters of built-in English holding exactly `count` distinct characters
    (the newline aside, as a char tokenizer counts them), each in the first half."""
    from gptjax.data.corpus import builtin_documents

    text = "\n".join(builtin_documents())[:size]
    first_half = Counter(text[: size // 2]).most_common()
    common = [c for c, _ in first_half if c not in "\n\t\r"][:count]
    keep = set(common) | {"\n"}
    text = "".join(c if c in keep else " " for c in text)
    assert len(set(text) - {"\n"}) == count and set(text[: size // 2]) >= set(common)
    return text


def _hf_gpt2(out: Path) -> None:
    """A small random GPT-2 with a byte-level BPE tokenizer: what `hf download` would fetch."""
    import torch
    from test_hf import GPT2_VOCAB, _gpt2_tokenizer, _redraw
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    config = GPT2Config(
        vocab_size=GPT2_VOCAB, n_positions=64, n_embd=32, n_layer=2, n_head=4,
        bos_token_id=0, eos_token_id=0,
    )  # fmt: skip
    model = GPT2LMHeadModel(config)
    _redraw(model, 0)
    model.save_pretrained(out)
    _gpt2_tokenizer(out)


def _hf_llama(out: Path, scratch: Path) -> None:
    """A Llama-style model at the recipe's small size (what `hf download` of a Llama would give,
    with gptjax's chat tokens so SFT needs no --add-chat-tokens): pretrained 2 steps, exported."""

    def gptjax(*args: str) -> None:
        command = [sys.executable, "-m", "gptjax.cli", *args]
        result = subprocess.run(command, cwd=ROOT, env=subprocess_env(), capture_output=True)
        assert result.returncode == 0, result.stderr.decode()[-2000:]

    gptjax("train", "--config", "configs/tiny.py", "--workdir", str(scratch), *SMALL_CHAT,
           *LLAMA_STYLE, "--config.train.steps=2", "--config.checkpoint.save_every=2",
           "--config.train.eval_every=2")  # fmt: skip
    gptjax("export-hf", str(scratch), "--out", str(out))


@pytest.fixture(scope="module")
def layout(tmp_path_factory) -> Path:
    from gptjax.data.corpus import builtin_documents

    root = tmp_path_factory.mktemp("readme")
    for name in ("configs", "tools", "tests"):
        (root / name).symlink_to(ROOT / name)
    bin_dir = root / "bin"
    bin_dir.mkdir()
    for name, module in (("gptjax", "-m gptjax.cli "), ("python", "")):
        (bin_dir / name).write_text(SHIM.format(module=module))
        (bin_dir / name).chmod(0o755)
    (root / ".venv" / "bin").mkdir(parents=True)
    (root / ".venv" / "bin" / "python").symlink_to(bin_dir / "python")
    (root / "input.txt").write_text(_distinct_chars_text(79, 200_000))  # 264 + 79 = 343
    (root / "novel.txt").write_text(_distinct_chars_text(83, 100_000))  # 264 + 83 = 347
    documents = builtin_documents()
    for i, document in enumerate(documents):  # half at the top, half one folder down
        folder = root / "my_corpus" / ("" if i % 2 else "more")
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"doc{i:03d}.txt").write_text(document)
    _hf_gpt2(root / "hf" / "gpt2")
    _hf_llama(root / "hf" / "llama", root / "scratch" / "llama-base")
    return root


@dataclass
class Outcome:
    returncode: int
    output: str
    seconds: float


def _run(command: Command, decision: Run, root: Path) -> Outcome:
    for source, copy in decision.before:
        shutil.copytree(root / source, root / copy)
    env = subprocess_env() | {
        "PATH": f"{root / 'bin'}{os.pathsep}{os.environ['PATH']}",
        "PYTHONPATH": str(ROOT),
        "README_PYTHON": sys.executable,
        "README_EXTRA": " ".join(decision.extra),
    }
    if command.language == "python":
        script = root / f"readme_block_{command.line}.py"
        script.write_text(command.script)
        argv = [sys.executable, script.name]
    else:
        argv = ["bash", "-e", "-o", "pipefail", "-c", command.script]
    start = time.perf_counter()
    try:
        result = subprocess.run(
            argv, cwd=root, env=env, input=decision.stdin, capture_output=True, text=True,
            timeout=COMMAND_TIMEOUT,
        )  # fmt: skip
    except subprocess.TimeoutExpired as error:
        return Outcome(-1, f"timed out after {error.timeout}s", COMMAND_TIMEOUT)
    return Outcome(result.returncode, result.stdout + result.stderr, time.perf_counter() - start)


@pytest.fixture(scope="module")
def outcomes(layout) -> dict[str, Outcome]:
    """Every runnable README command, run once, in README order."""
    results = {}
    for command in readme_commands():
        decision = DECISIONS.get(command.key)
        if isinstance(decision, Run) and command.key not in results:
            results[command.key] = _run(command, decision, layout)
    timings = sorted(results.items(), key=lambda item: -item[1].seconds)
    total = sum(outcome.seconds for outcome in results.values())
    print(f"\nREADME commands: {len(results)} run in {total:.0f}s; by time:")
    for key, outcome in timings:
        print(f"  {outcome.seconds:6.1f}s  {key.splitlines()[0][:90]}")
    return results


RUNNABLE = [c for c in readme_commands() if isinstance(DECISIONS.get(c.key), Run)]


@pytest.mark.slow
@pytest.mark.parametrize(
    "command", RUNNABLE, ids=[f"L{c.line}-{c.key.split()[1][:20]}" for c in RUNNABLE]
)
def test_readme_command_runs(command, outcomes, layout):
    decision, outcome = DECISIONS[command.key], outcomes[command.key]
    assert outcome.returncode == 0, f"{command.key}\n{outcome.output[-4000:]}"
    for text in decision.expect:
        assert text in outcome.output, f"{command.key}: no {text!r} in\n{outcome.output[-4000:]}"
    for path in decision.makes:
        assert (layout / path).exists(), f"{command.key} did not make {path}"
