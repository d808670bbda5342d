"""The recipe as a user runs it: pretrain -> SFT -> `gptjax eval`, `gptjax sample`, `gptjax chat`.

One small model is pretrained and finetuned once for the module (subprocesses, 2 simulated
devices); the tests then drive the inference commands against those two workdirs.
"""

import json
import math
import os
import pty
import re
import select
import shlex
import subprocess
import sys
import time
from pathlib import Path

import pytest
from small_run import SMALL_MODEL, SMALL_VOCAB, subprocess_env
from test_resume import losses, wait_for_step

from gptjax.inference.repetition import repeats_ngram
from gptjax.metrics import read_metrics
from gptjax.tokenizer import load_tokenizer

ROOT = Path(__file__).resolve().parents[1]
GPTJAX = [sys.executable, "-m", "gptjax.cli"]
SHORT = [
    *SMALL_MODEL,
    *SMALL_VOCAB,
    # 128-token rows: most built-in preference pairs (prompt + both answers) need over 64.
    "--config.data.seq_len=128",
    "--config.model.max_seq_len=128",
    "--config.optim.warmup_steps=5",
    "--config.train.log_every=10",
    "--config.train.eval_batches=4",
    "--config.sample.max_new_tokens=8",
]
QUESTION = "What does `json.dumps` do?"


def gptjax(*args, cwd=ROOT):
    return subprocess.run(
        [*GPTJAX, *args], cwd=cwd, capture_output=True, text=True, env=subprocess_env()
    )


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("recipe")
    base, sft = root / "base", root / "sft"
    # Relative workdirs and init_from, as a user types them (run from `root`).
    pretrain = gptjax(
        "train", "--config", str(ROOT / "configs/tiny.py"), "--workdir", "base", *SHORT,
        "--config.train.steps=40", "--config.train.eval_every=40", cwd=root,
    )  # fmt: skip
    assert pretrain.returncode == 0, pretrain.stderr[-3000:]
    finetune = gptjax(
        "train", "--config", str(ROOT / "configs/tiny_sft.py"), "--workdir", "sft", *SHORT,
        "--config.train.steps=60", "--config.train.eval_every=30", "--config.init_from=base",
        cwd=root,
    )  # fmt: skip
    assert finetune.returncode == 0, finetune.stderr[-3000:]
    return base, sft, finetune


DPO_RUN = [
    *SHORT,
    # Both kinds: in 40 steps this 2-layer model learns the easy kind (shuffled) clearly and
    # the hard one (other_answer) hardly (0.525 reward accuracy on 40 pairs when trained on it
    # alone); README's DPO table has the demo model's figures for the hard kind.
    "--config.data.preference_kinds=other_answer,shuffled",
    "--config.train.steps=40",
    "--config.train.eval_every=20",
    "--config.optim.peak_lr=1e-3",
    "--config.train.log_every=1",
]


def dpo_command(workdir, sft, *extra):
    return [
        *GPTJAX, "train", "--config", "configs/tiny_dpo.py", "--workdir", str(workdir),
        *DPO_RUN, f"--config.init_from={sft}", *extra,
    ]  # fmt: skip


@pytest.fixture(scope="module")
def dpo_run(runs):
    _, sft, _ = runs
    workdir = sft.parent / "dpo"
    result = subprocess.run(
        dpo_command(workdir, sft), cwd=ROOT, capture_output=True, text=True, env=subprocess_env()
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return workdir, result


@pytest.mark.slow
def test_sft_starts_from_the_pretrained_model_and_logs_its_data(runs):
    base, sft, finetune = runs
    assert "starting from the parameters of base step 40" in finetune.stdout
    assert "sft train:" in finetune.stdout and "truncated to fit" in finetune.stdout
    # The tokenizer came from the pretraining checkpoint, not a new one.
    assert (sft / "tokenizer" / "tokenizer.model").read_bytes() == (
        base / "tokenizer" / "tokenizer.model"
    ).read_bytes()
    evals = [r for r in read_metrics(sft / "metrics.jsonl") if "eval/loss" in r]
    assert [r["step"] for r in evals] == [0, 30, 60]  # step 0: the pretrained model
    assert evals[-1]["eval/loss"] < evals[0]["eval/loss"]
    # The configured questions were asked through the chat template after training.
    assert f"--- {QUESTION}" in finetune.stdout
    # The log shows each sample without its blank lines; samples.jsonl keeps the exact text.
    records = [json.loads(line) for line in (sft / "samples.jsonl").read_text().splitlines()]
    assert records
    for record in records:
        lines = [line for line in record["sample"].splitlines() if line.strip()]
        assert "\n".join(lines) in finetune.stdout


@pytest.mark.slow
def test_sft_lowers_held_out_answer_loss_below_the_base_model(runs, tmp_path):
    base, sft, _ = runs
    out = tmp_path / "eval.json"
    result = gptjax(
        "eval", str(base), str(sft), "--conversations", "builtin", "--text", "builtin",
        "--max-batches", "4", "--max-generate", "16", "--max-new-tokens", "12",
        "--json", str(out),
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    base_result, sft_result = json.loads(out.read_text())
    assert (base_result["phase"], sft_result["phase"]) == ("pretrain", "sft")
    assert sft_result["answer_loss"] < base_result["answer_loss"] - 0.3
    assert sft_result["answer_accuracy"] > base_result["answer_accuracy"]
    for result_ in (base_result, sft_result):
        assert result_["generated"] == 16 and 0 <= result_["bleu"] <= 100
        assert 0 < result_["text_perplexity"] < 512
        # bits/byte is the same loss over the bytes the scored tokens spell, counted exactly
        loss_sum = result_["text_loss"] * result_["text_tokens"]
        assert result_["text_bits_per_byte"] == pytest.approx(
            loss_sum / (math.log(2) * result_["text_bytes"])
        )
        assert result_["text_nats_per_char"] == pytest.approx(loss_sum / result_["text_chars"])
        assert 0 < result_["answer_bits_per_byte"] < result_["answer_loss"] / math.log(2)
    table = result.stdout
    assert "answer loss (nats/token)" in table and "BLEU" in table and "exact match" in table
    assert "text loss (bits/byte)" in table and "answer loss (bits/byte)" in table


@pytest.mark.slow
def test_sample_answers_chat_prompts_and_continues_raw_text(runs):
    base, sft, _ = runs
    chat = gptjax("sample", str(sft), "--prompt", QUESTION, "--max-new-tokens", "8")
    assert chat.returncode == 0, chat.stderr[-3000:]
    assert f"--- {QUESTION}\n" in chat.stdout
    raw = gptjax("sample", str(base), "--prompt", "The json module", "--max-new-tokens", "8")
    assert raw.returncode == 0, raw.stderr[-3000:]
    assert "---\nThe json module" in raw.stdout


@pytest.mark.slow
def test_the_python_api_answers_a_chat_checkpoint_as_sample_does(runs):
    """`gptjax.load(sft).generate` goes through the chat template like `gptjax sample` (a
    subprocess here) and gives the same greedy answers, `template="raw"` the same continuation
    as `--template raw` (the README's Python block runs in tests/test_readme_commands.py)."""
    from gptjax import load

    _, sft, _ = runs
    prompts = [QUESTION, "Name a Python module."]
    flags = ["--max-new-tokens", "24", "--temperature", "0"]
    chat = gptjax("sample", str(sft), *(a for p in prompts for a in ("--prompt", p)), *flags)
    assert chat.returncode == 0, chat.stderr[-3000:]
    model = load(sft)
    assert model.phase == "sft" and model.is_chat
    answers = model.generate(prompts, max_new_tokens=24, temperature=0)
    assert chat.stdout == "".join(f"--- {p}\n{a}\n" for p, a in zip(prompts, answers, strict=True))
    raw = gptjax("sample", str(sft), "--prompt", "The json module", "--template", "raw", *flags)
    assert raw.returncode == 0, raw.stderr[-3000:]
    continued = model.generate("The json module", max_new_tokens=24, temperature=0, template="raw")
    assert raw.stdout == f"---\nThe json module{continued}\n"


@pytest.mark.slow
def test_inference_commands_refuse_bad_input_in_one_line(runs, tmp_path):
    _, sft, _ = runs
    empty = gptjax("chat", str(tmp_path))
    assert empty.returncode == 74
    assert "has no checkpoints/ directory" in empty.stderr
    assert len(empty.stderr.strip().splitlines()) == 1
    bad = gptjax("sample", str(sft), "--prompt", "x", "--top-p", "1.5")
    assert bad.returncode == 2 and "--top-p must be in (0, 1]" in bad.stderr
    missing = gptjax("sample", str(sft))
    assert missing.returncode == 2 and "--prompt" in missing.stderr
    step = gptjax("sample", str(sft), "--prompt", "x", "--step", "7")
    assert step.returncode == 74 and "no committed checkpoint 7" in step.stderr


class Terminal:
    """A child process on a pseudo-terminal, as a person at a keyboard would run it."""

    def __init__(self, argv):
        self.fd, child = pty.openpty()
        self.process = subprocess.Popen(
            argv, cwd=ROOT, stdin=child, stdout=child, stderr=child, env=subprocess_env()
        )
        os.close(child)
        self.seen = ""

    def read_until(self, marker: str, timeout: float = 120.0) -> str:
        """Output up to and including the next `marker`."""
        deadline = time.monotonic() + timeout
        while marker not in self.seen:
            remaining = deadline - time.monotonic()
            assert remaining > 0, f"no {marker!r} within {timeout}s; output:\n{self.seen}"
            ready, _, _ = select.select([self.fd], [], [], remaining)
            if ready:
                try:
                    self.seen += os.read(self.fd, 4096).decode("utf-8", "replace")
                except OSError:  # the child closed the terminal
                    break
        head, _, self.seen = self.seen.partition(marker)
        return head + marker

    def send(self, line: str) -> None:
        os.write(self.fd, (line + "\n").encode())


@pytest.mark.slow
def test_chat_in_a_terminal_answers_resets_and_quits(runs):
    _, sft, _ = runs
    term = Terminal([*GPTJAX, "chat", str(sft), "--temperature", "0", "--max-new-tokens", "8"])
    try:
        banner = term.read_until("you> ")
        assert "chatting with" in banner and "/reset" in banner
        term.send(QUESTION)
        reply = term.read_until("you> ")
        assert "assistant> " in reply
        answer = reply.split("assistant> ", 1)[1].rsplit("you> ", 1)[0].strip()
        assert answer  # the model said something
        term.send("/temperature hot")
        assert "error: /temperature takes a number" in term.read_until("you> ")
        term.send("word " * 200)  # longer than the 128-token context
        assert "the model's context is 128" in term.read_until("you> ")
        term.send("/reset")
        assert "(conversation reset)" in term.read_until("you> ")
        term.send(QUESTION)  # after a reset the same greedy question gets the same answer
        again = term.read_until("you> ").split("assistant> ", 1)[1].rsplit("you> ", 1)[0]
        assert again.strip() == answer
        term.send("/quit")
        assert term.process.wait(timeout=60) == 0
    finally:
        term.process.kill()
        os.close(term.fd)


def demo_chat_script() -> tuple[list[str], list[str]]:
    """The questions and `gptjax chat` flags of `make demo`'s last command, from the Makefile."""
    makefile = (ROOT / "Makefile").read_text()
    pattern = r"printf '%s\\n' (.*?) \| \\\n\s*\$\(BIN\)/gptjax chat runs/demo-dpo(.*)"
    found = re.search(pattern, makefile)
    assert found, "make demo's scripted chat line moved; update this test"
    return shlex.split(found.group(1)), shlex.split(found.group(2))


@pytest.mark.slow
def test_the_demos_scripted_chat_answers_every_question_without_looping(dpo_run):
    """`make demo`'s ending on this module's DPO run: every question is answered (none refused
    for the context), and no answer says a 3-gram (of words, or of tokens) three times."""
    workdir, _ = dpo_run
    questions, flags = demo_chat_script()
    assert len(questions) >= 3 and questions[-1] == "/quit"
    result = subprocess.run(
        [*GPTJAX, "chat", str(workdir), *flags], input="\n".join(questions) + "\n",
        cwd=ROOT, capture_output=True, text=True, env=subprocess_env(),
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    assert "error:" not in result.stdout, result.stdout
    answers = [part.split("\nyou> ")[0] for part in result.stdout.split("assistant> ")[1:]]
    assert len(answers) == len(questions) - 1, result.stdout
    tok = load_tokenizer(workdir / "tokenizer")
    for answer in answers:
        assert answer.strip(), result.stdout
        assert not repeats_ngram(answer.split()), result.stdout
        assert not repeats_ngram(tok.encode(answer)), result.stdout


@pytest.mark.slow
def test_dpo_raises_held_out_reward_accuracy_without_collapsing_the_chosen_answers(dpo_run):
    workdir, result = dpo_run
    assert "dpo train:" in result.stdout and "reference model:" in result.stdout
    evals = [r for r in read_metrics(workdir / "metrics.jsonl") if "eval/loss" in r]
    assert [r["step"] for r in evals] == [0, 20, 40]
    start, end = evals[0], evals[-1]
    # Step 0: the policy is the reference, so every reward is 0 and the loss is log 2.
    assert start["eval/loss"] == pytest.approx(math.log(2), abs=1e-5)
    assert start["eval/reward_accuracy"] == 0.0 and start["eval/reward_margin"] == 0.0
    # Held-out pairs (the questions SFT held out), of both kinds as trained here.
    assert end["eval/reward_accuracy"] > 0.55 and end["eval/reward_accuracy/shuffled"] > 0.55
    assert end["eval/reward_margin"] > 0 and end["eval/loss"] < math.log(2)
    assert end["eval/chosen_logp"] > start["eval/chosen_logp"] - 0.5  # no collapse
    assert "held-out DPO loss" in result.stdout
    # Held-out built-in pairs hold both kinds; the figures are reported for each.
    for kind in ("other_answer", "shuffled"):
        assert end[f"eval/weight/{kind}"] > 0
        assert 0 <= end[f"eval/likelihood_accuracy/{kind}"] <= 1
        assert f"; {kind} (" in result.stdout.splitlines()[-2]  # the summary line


@pytest.mark.slow
def test_eval_scores_every_phase_on_pairs_and_labels_what_each_run_held_out(
    runs, dpo_run, tmp_path
):
    from gptjax.data.preferences import builtin_preferences, split_preferences

    base, sft, _ = runs
    dpo, _ = dpo_run
    _, held_out = split_preferences(builtin_preferences(), 0.05)
    pairs = tmp_path / "pairs.jsonl"
    fields = ("messages", "chosen", "rejected")
    tagged = [
        {k: p[k] for k in fields} | {"kind": ("even", "odd")[i % 2]} for i, p in enumerate(held_out)
    ]
    pairs.write_text("".join(json.dumps(p) + "\n" for p in tagged))
    out = tmp_path / "eval.json"
    common = ["--max-batches", "2", "--max-generate", "4", "--max-new-tokens", "8"]
    result = gptjax(
        "eval", str(base), str(sft), str(dpo), "--text", "builtin", "--conversations",
        "builtin", "--preferences", str(pairs), *common, "--json", str(out),
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    by_phase = {r["phase"]: r for r in json.loads(out.read_text())}
    base_r, sft_r, dpo_r = by_phase["pretrain"], by_phase["sft"], by_phase["dpo"]
    # --template auto: the base model is asked in raw text, the chat models in the template.
    assert [r["template"] for r in (base_r, sft_r, dpo_r)] == ["raw", "chat", "chat"]
    # Held out only where the run's own recorded split proves it.
    assert base_r["text_held_out"] and not sft_r["text_held_out"]
    assert not base_r["conversations_held_out"] and sft_r["conversations_held_out"]
    assert dpo_r["preferences_held_out"] and dpo_r["conversations_held_out"]
    assert "not known to be held out" in base_r["conversations_note"]
    assert "warning: only 22 held-out documents" in result.stderr
    # Every phase gets the policy's own preference, per kind; rewards need a reference,
    # which only the DPO checkpoint records (the SFT model it started from).
    for r in (base_r, sft_r, dpo_r):
        figures = r["preferences"]
        assert set(figures) == {"all", "even", "odd"}
        assert figures["all"]["pairs"] == figures["even"]["pairs"] + figures["odd"]["pairs"] > 0
        assert 0 <= figures["all"]["likelihood_accuracy"] <= 1
        assert 0 <= r["repetition"] <= 1
    assert "reward_accuracy" not in base_r["preferences"]["all"]
    assert dpo_r["reference"].startswith(str(sft)) and 0 <= dpo_r["pairs_all_reward_accuracy"] <= 1
    assert "reward accuracy [odd]" in result.stdout
    # The policy against itself: every reward is 0, so no pair is won.
    same = gptjax(
        "eval", str(dpo), "--preferences", str(pairs), "--reference", str(dpo), "--json", str(out)
    )
    assert same.returncode == 0, same.stderr[-3000:]
    (self_ref,) = json.loads(out.read_text())
    assert self_ref["pairs_all_reward_accuracy"] == 0 and self_ref["pairs_all_reward_margin"] == 0


@pytest.mark.slow
def test_dpo_resumes_exactly_after_a_kill(runs, dpo_run, tmp_path):
    _, sft, _ = runs
    uninterrupted, _ = dpo_run
    workdir = tmp_path / "dpo"
    extra = "--config.checkpoint.save_every=5"
    process = subprocess.Popen(
        dpo_command(workdir, sft, extra), cwd=ROOT, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True, env=subprocess_env(),
    )  # fmt: skip
    wait_for_step(workdir, 12, process)
    process.kill()
    process.communicate()
    resumed = subprocess.run(
        dpo_command(workdir, sft, extra), cwd=ROOT, capture_output=True, text=True,
        env=subprocess_env(),
    )  # fmt: skip
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "resuming from step" in resumed.stdout
    assert "reference model:" in resumed.stdout  # reloaded from the step recorded at start
    assert losses(workdir) == losses(uninterrupted)  # exact float equality, every step


@pytest.mark.slow
def test_dpo_with_precomputed_reference_trains_like_the_frozen_model(runs, dpo_run, tmp_path):
    """The reference's log-probabilities computed once before training give the same run as a
    reference model beside the policy (float32; different XLA graphs, so 1e-4 relative)."""
    _, sft, _ = runs
    uninterrupted, _ = dpo_run
    workdir = tmp_path / "precomputed"
    result = subprocess.run(
        dpo_command(workdir, sft, "--config.dpo.reference=precomputed"),
        cwd=ROOT, capture_output=True, text=True, env=subprocess_env(),
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    assert "precomputed the reference log-probabilities" in result.stdout
    assert losses(workdir) == pytest.approx(losses(uninterrupted), rel=1e-4)


@pytest.mark.slow
def test_sft_of_a_non_default_base_adopts_its_architecture_and_refuses_a_conflict(runs, tmp_path):
    """The base is 2 layers, 64 wide, vocabulary 512: SFT with configs/tiny_sft.py as it is
    (4 layers, 128 wide, 2048) takes the base's shape without any --config.model flag."""
    from gptjax.checkpoint import Checkpointer

    base, _, _ = runs
    quick = [
        "--config.train.steps=2",
        "--config.train.eval_every=2",
        "--config.optim.warmup_steps=1",
    ]
    quick += ["--config.train.eval_batches=1", "--config.sample.max_new_tokens=0"]
    sft = tmp_path / "sft"
    result = gptjax(
        "train", "--config", "configs/tiny_sft.py", "--workdir", str(sft),
        f"--config.init_from={base}", *quick,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    notes = [x for x in result.stdout.splitlines() if x.startswith("note: the architecture")]
    assert len(notes) == 1 and "model.num_layers 4 -> 2" in notes[0], result.stdout[-3000:]
    assert "model.vocab_size 2048 -> 512" in notes[0]
    with Checkpointer(base, read_only=True) as a, Checkpointer(sft, read_only=True) as b:
        assert b.metadata(2)["model"] == a.metadata(a.steps()[-1])["model"]
    conflict = tmp_path / "conflict"
    refused = gptjax(
        "train", "--config", "configs/tiny_sft.py", "--workdir", str(conflict),
        f"--config.init_from={base}", "--config.model.num_layers=4", *quick,
    )  # fmt: skip
    assert refused.returncode == 2, refused.stderr[-3000:]
    errors = [x for x in refused.stderr.splitlines() if x.startswith("gptjax: error:")]
    assert len(errors) == 1 and "model.num_layers=4" in errors[0] and "differs from 2" in errors[0]
    assert not conflict.exists()  # the failed start removed the workdir it had made


def test_dpo_without_a_model_to_start_from_is_refused(tmp_path):
    result = gptjax("train", "--config", "configs/tiny_dpo.py", "--workdir", str(tmp_path / "w"))
    assert result.returncode == 2, result.stderr[-3000:]
    errors = [x for x in result.stderr.splitlines() if x.startswith("gptjax: error:")]
    assert len(errors) == 1 and 'phase="dpo" needs init_from' in errors[0]
