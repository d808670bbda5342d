"""LoRA as a user runs it: a Llama-style model imported from Hugging Face, SFT and then DPO
with adapters only, evaluated, resumed, and exported merged and as a peft adapter.

The Llama-style base is pretrained here for a few steps (so its answers are not noise),
exported with `gptjax export-hf` and imported back with `gptjax import-hf`: the LoRA runs
start from an imported checkpoint exactly as from a hub model (no downloads).
"""

import json
import math
import shutil
import subprocess
import sys
from pathlib import Path

import jax
import numpy as np
import pytest
from flax import nnx
from small_run import LLAMA_STYLE, SMALL_MODEL, SMALL_VOCAB, subprocess_env
from test_resume import losses

from gptjax.checkpoint import Checkpointer
from gptjax.inference.load import load_model
from gptjax.metrics import read_metrics
from gptjax.paths import tree_size

ROOT = Path(__file__).resolve().parents[1]
SHORT = [
    *SMALL_MODEL,
    *SMALL_VOCAB,
    "--config.data.seq_len=128",  # built-in preference pairs need over 64 tokens
    "--config.model.max_seq_len=128",
    "--config.optim.warmup_steps=5",
    "--config.train.log_every=1",
    "--config.train.eval_batches=4",
    "--config.sample.max_new_tokens=0",
]
SFT = [
    "--config.finetune.lora_rank=8",
    "--config.optim.peak_lr=3e-3",  # adapters start from zero: a larger rate than a full SFT
    "--config.train.steps=60",
    "--config.train.eval_every=30",
    "--config.checkpoint.save_every=30",
]


def gptjax(*args):
    return subprocess.run(
        [sys.executable, "-m", "gptjax.cli", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env=subprocess_env(),
    )


def _ok(result):
    assert result.returncode == 0, result.stderr[-3000:]
    return result


def sft_command(workdir, imported):
    return ["train", "--config", "configs/tiny_sft.py", "--workdir", str(workdir), *SHORT, *SFT,
            f"--config.init_from={imported}"]  # fmt: skip


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("lora")
    base, imported, sft, dpo = (root / name for name in ("base", "imported", "sft", "dpo"))
    _ok(gptjax("train", "--config", "configs/tiny.py", "--workdir", str(base), *SHORT, *LLAMA_STYLE,
               "--config.train.steps=40", "--config.train.eval_every=40"))  # fmt: skip
    _ok(gptjax("export-hf", str(base), "--out", str(root / "base_hf")))
    _ok(gptjax("import-hf", str(root / "base_hf"), "--workdir", str(imported)))
    sft_run = _ok(gptjax(*sft_command(sft, imported)))
    dpo_run = _ok(
        gptjax(
            "train", "--config", "configs/tiny_dpo.py", "--workdir", str(dpo), *SHORT,
            "--config.finetune.lora_rank=4", "--config.train.steps=30",
            "--config.train.eval_every=30", "--config.optim.peak_lr=3e-3",
            "--config.data.preference_kinds=other_answer,shuffled", f"--config.init_from={sft}",
        )
    )  # fmt: skip
    return {"root": root, "imported": imported, "sft": sft, "dpo": dpo, "sft_run": sft_run,
            "dpo_run": dpo_run}  # fmt: skip


@pytest.mark.slow
def test_lora_sft_and_dpo_lower_held_out_answer_loss_below_the_imported_model(runs, tmp_path):
    assert "trained parameters" in runs["sft_run"].stdout
    out = tmp_path / "eval.json"
    _ok(gptjax("eval", str(runs["imported"]), str(runs["sft"]), str(runs["dpo"]),
               "--conversations", "builtin", "--max-batches", "4", "--max-generate", "4",
               "--max-new-tokens", "8", "--json", str(out)))  # fmt: skip
    imported, sft, dpo = json.loads(out.read_text())
    print(f"answer loss: imported {imported['answer_loss']:.3f}, LoRA SFT {sft['answer_loss']:.3f}")
    assert sft["answer_loss"] < imported["answer_loss"] - 0.1
    # The chain imported -> SFT adapters -> DPO adapters loads merged; DPO moved the answers.
    assert dpo["phase"] == "dpo" and math.isfinite(dpo["answer_loss"])
    assert dpo["answer_loss"] != sft["answer_loss"]


@pytest.mark.slow
def test_lora_checkpoints_hold_only_adapters_and_name_their_base(runs):
    with Checkpointer(runs["sft"], read_only=True) as checkpointer:
        metadata = checkpointer.metadata(60)
        lora = checkpointer.info(60).path
    names = metadata["fingerprints"]["params"]
    assert names and all("_lora_" in name for name in names), sorted(names)[:5]
    base = metadata["lora"]["base"]
    assert (Path(base["workdir"]), base["step"]) == (runs["imported"], 0)
    with Checkpointer(runs["imported"], read_only=True) as checkpointer:
        imported = checkpointer.info(0).path
    # Item by item (the whole checkpoints differ by what else they hold: the imported one has
    # no optimizer state, the LoRA one carries the adapters' AdamW moments). Measured: params
    # 116 kB vs 712 kB, trainer 230 kB, where a full finetune's moments would be ~1.4 MB.
    assert tree_size(lora / "params") < tree_size(imported / "params") / 4
    assert tree_size(lora / "trainer") < tree_size(imported / "params") / 2


@pytest.mark.slow
def test_dpo_reference_is_the_lora_base_and_starts_equal_to_the_policy(runs):
    stdout = runs["dpo_run"].stdout
    assert "reference model: the LoRA base (adapters off, no second copy)" in stdout
    evals = [r for r in read_metrics(runs["dpo"] / "metrics.jsonl") if "eval/loss" in r]
    assert evals[0]["step"] == 0 and evals[0]["eval/loss"] == pytest.approx(math.log(2), abs=1e-6)
    assert evals[-1]["eval/loss"] < evals[0]["eval/loss"]
    assert evals[-1]["eval/reward_accuracy"] > 0.5


@pytest.mark.slow
def test_a_resumed_lora_run_repeats_the_uninterrupted_one(runs, tmp_path):
    resumed = tmp_path / "sft"
    shutil.copytree(runs["sft"], resumed)
    shutil.rmtree(resumed / "checkpoints" / "60")  # as if stopped after step 30's save
    result = _ok(gptjax(*sft_command(resumed, runs["imported"])))
    assert "resuming from step 30" in result.stdout
    before, after = losses(runs["sft"]), losses(resumed)
    assert [after[s] for s in range(31, 61)] == [before[s] for s in range(31, 61)]


def _logits_of_transformers(path, ids, adapter=None):
    import torch
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
    if adapter is not None:
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, adapter)
    with torch.no_grad():
        return model.eval()(torch.tensor(ids)).logits.numpy()


@pytest.mark.slow
def test_export_merges_adapters_or_writes_a_peft_adapter_with_the_same_logits(runs):
    root = runs["root"]
    _ok(gptjax("export-hf", str(runs["sft"]), "--out", str(root / "sft_hf")))
    _ok(gptjax("export-hf", str(runs["sft"]), "--out", str(root / "adapter"), "--lora-adapter"))
    _ok(gptjax("export-hf", str(runs["imported"]), "--out", str(root / "imported_hf")))
    ids = np.random.default_rng(0).integers(0, 512, (2, 24))
    loaded = load_model(runs["sft"])
    with loaded.activated():
        ours = np.asarray(jax.jit(lambda x: nnx.merge(loaded.graphdef, loaded.params)(x))(ids))
    merged = _logits_of_transformers(root / "sft_hf", ids)
    with_peft = _logits_of_transformers(root / "imported_hf", ids, adapter=root / "adapter")
    base = _logits_of_transformers(root / "imported_hf", ids)
    assert np.abs(ours - merged).max() < 1e-4
    assert np.abs(with_peft - merged).max() < 1e-4
    assert np.abs(base - merged).max() > 1e-2  # the adapters did move the model
