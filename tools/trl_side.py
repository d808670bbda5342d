"""TRL's half of tools/compare_trl.py: SFTTrainer or DPOTrainer (torch, CPU) with the settings
gptjax trains with, on a Hugging Face model directory that `gptjax export-hf` wrote.

    python tools/trl_side.py sft SPEC.json     (or dpo; compare_trl.py writes SPEC.json)

SPEC.json holds the model directory, the training JSONL (messages for SFT; messages + chosen
+ rejected for DPO), the output directory and the matched settings (see `compare_trl.py`'s
`trl_spec`). The trained model is saved to the output directory with gptjax's chat template
(without TRL's generation markers, which only mark the loss), so `gptjax import-hf` records
it as a chat model. The last stdout line is JSON: TRL's own train_runtime and what it trained.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

from gptjax.hf.chat import CHAT_TEMPLATE, TEMPLATE_FILE

# gptjax's template with TRL's {% generation %} markers around what gptjax trains on: an
# assistant turn's content and the <|end|> closing it, not the <|assistant|> header. TRL's
# assistant_only_loss builds its loss mask from these markers.
_TURN = "{{ '<|' + message['role'] + '|>' + message['content'] + '<|end|>' }}"
_MARKED_TURN = (
    "{% if message['role'] == 'assistant' %}{{ '<|assistant|>' }}"
    "{% generation %}{{ message['content'] + '<|end|>' }}{% endgeneration %}"
    "{% else %}" + _TURN + "{% endif %}"
)
if _TURN not in CHAT_TEMPLATE:  # gptjax's template changed: the markers must follow it
    raise SystemExit("trl_side.py: gptjax's chat template changed; update _TURN to match it")
TRAINING_TEMPLATE = CHAT_TEMPLATE.replace(_TURN, _MARKED_TURN)


def _common_args(spec: dict) -> dict:
    """TrainingArguments shared by SFTConfig and DPOConfig: gptjax's optimizer and schedule.

    gptjax: optax AdamW (decay on matrices only, embeddings included), global-norm clip,
    linear warmup from 0 then cosine to peak * end_lr_fraction at the last step. transformers'
    Trainer decays everything but biases and norms (the same set), and "cosine_with_min_lr"
    with min_lr_rate is the same curve (both start the warmup at lr 0 on step 0).
    """
    return dict(
        output_dir=str(Path(spec["out"]) / "trainer"),
        max_steps=spec["steps"],
        learning_rate=spec["peak_lr"],
        lr_scheduler_type="cosine_with_min_lr",
        lr_scheduler_kwargs={"min_lr_rate": spec["end_lr_fraction"]},
        warmup_steps=spec["warmup_steps"],
        optim="adamw_torch",
        adam_beta1=spec["b1"],
        adam_beta2=spec["b2"],
        adam_epsilon=spec["eps"],
        weight_decay=spec["weight_decay"],
        max_grad_norm=spec["clip_norm"],
        gradient_accumulation_steps=1,
        # TRL 1.x turns gradient checkpointing on by default; gptjax recomputes activations
        # only with model.remat (configs/tiny.py: "none"), so TRL follows that setting.
        gradient_checkpointing=spec["remat"] != "none",
        seed=spec["seed"],
        data_seed=spec["seed"],
        use_cpu=True,
        bf16=False,
        fp16=False,
        logging_steps=max(1, spec["steps"] // 10),
        save_strategy="no",
        report_to=[],
        dataloader_num_workers=0,
        disable_tqdm=False,
    )


def _peft_config(spec: dict):
    """peft's LoraConfig for a LoRA run (tools/peft_lora.py maps gptjax's settings), or None."""
    if not spec.get("lora"):
        return None
    from peft import LoraConfig

    return LoraConfig(**spec["lora"])


def trained_parameters(trainer, spec: dict) -> int:
    """The parameters the trainer updates; for LoRA, exit unless peft adapts what
    compare_trl.py expects (its count of gptjax's matched adapters)."""
    count = sum(p.numel() for p in trainer.model.parameters() if p.requires_grad)
    expected = spec.get("lora_trainable")
    if expected is not None and count != expected:
        raise SystemExit(
            f"trl_side.py: peft trains {count:,} parameters, compare_trl.py expected {expected:,}"
        )
    return count


def _read_jsonl(path: str) -> list[dict]:
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def _model_and_tokenizer(model_dir: str):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype="float32")
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    tokenizer.chat_template = TRAINING_TEMPLATE
    return model, tokenizer


def check_rendering(tokenizer, rows: list[dict], expected: list[dict]) -> None:
    """Exit unless the training template gives, for the first training conversations, the
    ids and loss mask gptjax's chat template gives (`expected`, rendered by compare_trl.py):
    otherwise the two sides would not train on the same tokens."""
    for i, (row, want) in enumerate(zip(rows, expected, strict=False)):
        got = tokenizer.apply_chat_template(
            row["messages"], tokenize=True, return_dict=True, return_assistant_tokens_mask=True
        )
        # gptjax's mask is on targets (ids[1:]); TRL's on the tokens themselves.
        ids, mask = list(got["input_ids"]), list(got["assistant_masks"])
        if ids != want["ids"] or mask[1:] != want["mask"][1:]:
            raise SystemExit(
                f"trl_side.py: conversation {i} renders differently under TRL than under gptjax "
                f"(ids equal: {ids == want['ids']}, masks equal: {mask == want['mask']})"
            )


def run_sft(spec: dict) -> dict:
    from datasets import Dataset
    from trl import SFTConfig, SFTTrainer

    model, tokenizer = _model_and_tokenizer(spec["model"])
    rows = [{"messages": r["messages"]} for r in _read_jsonl(spec["train"])]
    check_rendering(tokenizer, rows, spec["rendered"])
    config = SFTConfig(
        **_common_args(spec),
        per_device_train_batch_size=spec["batch"],
        max_length=spec["seq_len"],
        # gptjax packs first-fit with one segment per example (attention never crosses);
        # TRL's "bfd" packing is the same idea: position ids restart per example and
        # transformers' mask keeps attention inside each one.
        packing=spec["packing"],
        packing_strategy="bfd",
        assistant_only_loss=True,
        dataset_num_proc=None,
    )
    trainer = SFTTrainer(
        model=model,
        args=config,
        train_dataset=Dataset.from_list(rows),
        processing_class=tokenizer,
        peft_config=_peft_config(spec),
    )
    packed_rows = len(trainer.train_dataset)
    trained = trained_parameters(trainer, spec)
    result = trainer.train()
    _save(trainer, tokenizer, spec["out"])
    return {
        "train_runtime": result.metrics["train_runtime"],
        "examples": len(rows),
        "rows": packed_rows,
        "examples_per_step": spec["batch"] * len(rows) / packed_rows,
        "rendering_checked": len(spec["rendered"]),
        "final_loss": result.training_loss,
        "trained_parameters": trained,
    }


def run_dpo(spec: dict) -> dict:
    from datasets import Dataset
    from trl import DPOConfig, DPOTrainer

    model, tokenizer = _model_and_tokenizer(spec["model"])
    rows = [
        {
            "prompt": r["messages"],
            "chosen": [{"role": "assistant", "content": r["chosen"]}],
            "rejected": [{"role": "assistant", "content": r["rejected"]}],
        }
        for r in _read_jsonl(spec["train"])
    ]
    config = DPOConfig(
        **_common_args(spec),
        per_device_train_batch_size=spec["batch"],
        max_length=spec["seq_len"],
        beta=spec["beta"],
        label_smoothing=spec["label_smoothing"],
        loss_type=["sigmoid"],
        dataset_num_proc=None,
    )
    # ref_model=None: TRL freezes a copy of the starting model (the SFT model) as the
    # reference, as gptjax's dpo.reference="model" does; with a peft_config it keeps no copy
    # and computes the reference with the adapters disabled (trl's use_adapter(model, None)),
    # as gptjax's LoRA DPO does (gptjax.lora.adapters_off).
    trainer = DPOTrainer(
        model=model,
        ref_model=None,
        args=config,
        train_dataset=Dataset.from_list(rows),
        processing_class=tokenizer,
        peft_config=_peft_config(spec),
    )
    trained = trained_parameters(trainer, spec)
    result = trainer.train()
    _save(trainer, tokenizer, spec["out"])
    return {
        "train_runtime": result.metrics["train_runtime"],
        "examples": len(rows),
        "examples_per_step": spec["batch"],
        "final_loss": result.training_loss,
        "trained_parameters": trained,
    }


def _save(trainer, tokenizer, out: str) -> None:
    """The model and tokenizer, with gptjax's plain chat template (what inference renders).
    A peft model is saved with its adapters merged (W + scale·A·B), a plain Hugging Face
    model that `gptjax import-hf` reads like any other."""
    model = trainer.model
    if hasattr(model, "merge_and_unload"):
        model = model.merge_and_unload()
    model.save_pretrained(out)
    tokenizer.chat_template = CHAT_TEMPLATE
    tokenizer.save_pretrained(out)
    Path(out, TEMPLATE_FILE).write_text(CHAT_TEMPLATE, encoding="utf-8")


def main(argv: list[str]) -> int:
    if len(argv) != 2 or argv[0] not in ("sft", "dpo"):
        print(__doc__)
        return 2
    import torch

    spec = json.loads(Path(argv[1]).read_text(encoding="utf-8"))
    torch.set_num_threads(spec["threads"])
    torch.manual_seed(spec["seed"])
    started = time.monotonic()
    report = (run_sft if argv[0] == "sft" else run_dpo)(spec)
    report["process_seconds_after_import"] = time.monotonic() - started
    print(json.dumps(report))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
