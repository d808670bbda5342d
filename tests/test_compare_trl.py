"""tools/compare_trl.py end to end at toy size: gptjax and TRL each run SFT then DPO from one
4-step base on built-in conversations, and every figure of the table comes out finite."""

import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from small_run import subprocess_env, train_command

from gptjax.data.conversations import builtin_conversations

ROOT = Path(__file__).resolve().parent.parent
MODELS = ("gptjax sft", "TRL sft", "gptjax dpo", "TRL dpo")


def _compare(tmp_path, *extra: str) -> tuple[subprocess.CompletedProcess, dict]:
    """compare_trl.py at toy size from a 4-step base: its output and its comparison.json."""
    base = tmp_path / "base"
    subprocess.run(train_command(base, 4), check=True, env=subprocess_env(), cwd=ROOT)
    conversations = tmp_path / "conversations.jsonl"
    with conversations.open("w") as f:
        for messages in builtin_conversations()[:300]:
            f.write(json.dumps({"messages": messages}) + "\n")
    out = tmp_path / "cmp"
    command = [
        sys.executable, str(ROOT / "tools" / "compare_trl.py"), str(base),
        "--conversations", str(conversations), "--out", str(out),
        "--sft-steps", "3", "--dpo-steps", "2", "--sft-warmup", "1", "--dpo-warmup", "1",
        "--batch", "4", "--max-generate", "4", "--validation-fraction", "0.2",
        "--kinds", "other_answer,shuffled", *extra,
    ]  # fmt: skip
    done = subprocess.run(
        command, capture_output=True, text=True, env=subprocess_env(), cwd=ROOT, timeout=900
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return done, json.loads((out / "comparison.json").read_text())


@pytest.mark.slow
def test_compare_trl_runs_both_sides_and_scores_them(tmp_path):
    done, report = _compare(tmp_path)
    results = report["results"]
    assert list(results) == ["gptjax sft", "TRL sft", "gptjax dpo", "TRL dpo"]
    for name in MODELS:
        figures = results[name]
        for key in ("answer_loss", "bleu", "likelihood_accuracy", "wall_seconds"):
            assert math.isfinite(figures[key]), (name, key, figures[key])
        assert 0 < figures["answer_loss"] < 10  # nats/token of a 512-token vocabulary
        assert 0 <= figures["likelihood_accuracy"] <= 1
    for name in ("gptjax dpo", "TRL dpo"):
        assert 0 <= results[name]["reward_accuracy"] <= 1
        assert results[name]["pairs"] > 0
        # Scored by `gptjax eval --preferences` per kind, against the side's SFT model.
        by_kind = results[name]["by_kind"]
        assert set(by_kind) == {"all", "other_answer", "shuffled"}
        assert (
            sum(by_kind[k]["pairs"] for k in ("other_answer", "shuffled"))
            == by_kind["all"]["pairs"]
        )
    for name in ("gptjax sft", "TRL sft"):  # before DPO: likelihood only, no self-reward
        assert "reward_accuracy" not in results[name]["by_kind"]["shuffled"]
    # Both sides trained on the same split: TRL checked its rendering against gptjax's.
    assert results["TRL sft"]["trl"]["rendering_checked"] > 0
    assert report["counts"]["sft_train"] == results["TRL sft"]["trl"]["examples"]
    # The printed table: a header, a rule, one line per figure and two per pair kind (reward
    # and likelihood accuracy), one column per model.
    lines = [line for line in done.stdout.splitlines() if line.startswith("|")]
    assert lines[0] == "| | " + " | ".join(MODELS) + " |"
    assert len(lines) == 2 + 8 + 2 * 2 and all(line.count("|") == 6 for line in lines)
    assert lines[-1].startswith("| likelihood accuracy [shuffled] |")
    # Full finetunes: every weight trains on both sides (GPT-2's tied head counted once).
    assert results["gptjax sft"]["trained_parameters"] == results["TRL sft"]["trained_parameters"]


@pytest.mark.slow
def test_compare_trl_lora_trains_equal_adapters_on_both_sides(tmp_path):
    """--lora-rank: gptjax's adapters and peft's on the GPT-2 export train as many parameters
    (c_attn at the rank of equal count), TRL's model comes back merged, both are scored."""
    done, report = _compare(tmp_path, "--lora-rank", "4", "--lora-alpha", "8")
    results, out = report["results"], tmp_path / "cmp"
    names = ["gptjax LoRA sft", "peft+TRL LoRA sft", "gptjax LoRA dpo", "peft+TRL LoRA dpo"]
    assert list(results) == names
    # configs/tiny.py at SMALL_MODEL (D 64, F 256, 2 layers), rank 4 on q,k,v,o,up,down.
    per_layer = 4 * (3 * (64 + 64) + (64 + 64) + 2 * (64 + 256))
    assert report["lora"]["peft"]["rank_pattern"] == {"attn.c_attn": 6}
    for name in names:
        assert results[name]["trained_parameters"] == 2 * per_layer, name
        for key in ("answer_loss", "bleu", "likelihood_accuracy"):
            assert math.isfinite(results[name][key]), (name, key)
    for name in names[2:]:
        assert 0 <= results[name]["reward_accuracy"] <= 1
    sft_log = (out / "gptjax-sft.log").read_text()
    assert f"LoRA rank 4, alpha 8 on q,k,v,o,up,down: {2 * per_layer:,} trained" in sft_log
    # TRL's SFT model is saved merged (no adapter files): the adapted projections moved from
    # the base, the frozen embeddings did not.
    from gptjax.hf.safetensors_io import SafetensorsFile

    trl_dir, base_dir = out / "trl-sft-hf", out / "base-hf"
    assert not (trl_dir / "adapter_config.json").exists()
    trained = SafetensorsFile(trl_dir / "model.safetensors")
    base = SafetensorsFile(base_dir / "model.safetensors")

    def tensor(file: SafetensorsFile, suffix: str) -> np.ndarray:
        return file.read(next(k for k in file.entries if k.endswith(suffix)))

    assert not np.array_equal(tensor(trained, "h.0.attn.c_attn.weight"),
                              tensor(base, "h.0.attn.c_attn.weight"))  # fmt: skip
    np.testing.assert_array_equal(tensor(trained, "wte.weight"), tensor(base, "wte.weight"))
    lines = [line for line in done.stdout.splitlines() if line.startswith("|")]
    assert lines[0] == "| | " + " | ".join(names) + " |"


def test_trl_side_follows_gptjax_learning_rate_schedule():
    """The transformers scheduler trl_side.py asks for gives gptjax's lr at every step:
    linear warmup from 0, then cosine down to peak * end_lr_fraction at the last step."""
    import torch
    from transformers import get_scheduler

    sys.path.insert(0, str(ROOT / "tools"))
    from trl_side import _common_args

    from gptjax.optim import learning_rate_schedule

    spec = {"out": "unused", "steps": 50, "peak_lr": 1e-3, "end_lr_fraction": 0.1,
            "warmup_steps": 7, "b1": 0.9, "b2": 0.95, "eps": 1e-8, "weight_decay": 0.0,
            "clip_norm": 1.0, "seed": 0, "remat": "none"}  # fmt: skip
    args = _common_args(spec)
    # gptjax's remat "none" keeps activations; TRL 1.x would otherwise recompute them.
    assert args["gradient_checkpointing"] is False
    assert _common_args(spec | {"remat": "full"})["gradient_checkpointing"] is True
    optimizer = torch.optim.AdamW([torch.nn.Parameter(torch.zeros(1))], lr=args["learning_rate"])
    scheduler = get_scheduler(
        args["lr_scheduler_type"],
        optimizer,
        num_warmup_steps=args["warmup_steps"],
        num_training_steps=args["max_steps"],
        scheduler_specific_kwargs=args["lr_scheduler_kwargs"],
    )
    gptjax_lr = learning_rate_schedule(1e-3, 7, 50, 0.1)
    for step in range(spec["steps"]):
        assert scheduler.get_last_lr()[0] == pytest.approx(float(gptjax_lr(step)), rel=1e-5)
        optimizer.step()
        scheduler.step()


def test_table_has_overall_rows_then_two_rows_per_pair_kind():
    """gptjax eval's per-kind figures become rows; its "all" kind is the overall rows, and an
    SFT model (no reward against itself) shows "–" there."""
    sys.path.insert(0, str(ROOT / "tools"))
    from compare_trl import markdown_table

    def model(likelihood: float, reward: float | None) -> dict:
        kinds = {"all": likelihood, "other_answer": likelihood - 0.1, "shuffled": likelihood + 0.1}
        by_kind = {
            kind: {"pairs": 10, "likelihood_accuracy": value}
            | ({} if reward is None else {"reward_accuracy": reward})
            for kind, value in kinds.items()
        }
        return {"answer_loss": 4.0, "by_kind": by_kind, **by_kind["all"]}

    table = markdown_table({"sft": model(0.5, None), "dpo": model(0.6, 0.8)})
    lines = table.splitlines()
    assert len(lines) == 2 + 8 + 2 * 2
    assert lines[-4:] == [
        "| reward accuracy [other_answer] | – | 0.800 |",
        "| likelihood accuracy [other_answer] | 0.400 | 0.500 |",
        "| reward accuracy [shuffled] | – | 0.800 |",
        "| likelihood accuracy [shuffled] | 0.600 | 0.700 |",
    ]
    assert "| likelihood accuracy | 0.500 | 0.600 |" in lines
