"""`gptjax export-hf --lora-adapter`: a LoRA run's adapters as a peft adapter directory.

Writes adapter_config.json and adapter_model.safetensors with peft's key names
(`base_model.model.model.layers.{i}.self_attn.q_proj.lora_A.weight` [r, in], `lora_B.weight`
[out, r]), so `peft.PeftModel.from_pretrained(base, DIR)` over the base exported by
`gptjax export-hf BASE_WORKDIR` computes what gptjax's adapted model does. Llama-style models
only: GPT-2's fused `c_attn` has no per-projection module for peft to adapt.
"""

from __future__ import annotations

import json

import jax
import numpy as np
from flax.core import spmd as flax_spmd

from gptjax import sharding
from gptjax.checkpoint import Checkpointer
from gptjax.checkpoint.merged import adapters_target, lora_of
from gptjax.errors import ConfigError
from gptjax.hf.config import family_of
from gptjax.hf.safetensors_io import write_safetensors
from gptjax.inference.load import workdir_and_step
from gptjax.lora import TARGETS, adapter_names
from gptjax.model import ModelConfig
from gptjax.paths import PathLike, as_path

ONE_DEVICE = {"data": 1, "fsdp": 1, "tensor": 1}


def peft_tensors(adapters, lora, num_layers: int) -> list[tuple[str, np.ndarray]]:
    """(peft key, array) of every adapter matrix, per layer, as torch's [out, in] Linear."""
    tensors = []
    for layer in range(num_layers):
        for target in lora.targets:
            module, _, hf_name = TARGETS[target]
            name_a, name_b = adapter_names(target)
            a = np.asarray(adapters["blocks"][module][name_a][...][layer])  # [in..., r]
            b = np.asarray(adapters["blocks"][module][name_b][...][layer])  # [r, out...]
            key = f"base_model.model.model.layers.{layer}.{hf_name}"
            tensors.append((f"{key}.lora_A.weight", a.reshape(-1, lora.rank).T))
            tensors.append((f"{key}.lora_B.weight", b.reshape(lora.rank, -1).T))
    return tensors


def export_lora_adapter(workdir: PathLike, out: PathLike, *, step: int | None = None) -> list:
    """Writes checkpoint `step` (default: the latest) of a LoRA run as a peft adapter."""
    workdir, named_step = workdir_and_step(workdir)
    step = named_step if step is None else step
    with Checkpointer(workdir, read_only=True) as checkpointer:
        step = checkpointer.steps()[-1] if step is None and checkpointer.steps() else step
        metadata = checkpointer.metadata(step)
        record = metadata.get("lora")
        if record is None:
            raise ConfigError(
                f"{workdir} step {step} holds every weight (trained without LoRA): export it "
                "without --lora-adapter"
            )
        model_config = ModelConfig(**(metadata["model"] | {"attention": "xla"}))
        if family_of(model_config) != "llama":
            raise ConfigError(
                "--lora-adapter needs a Llama-style model (peft adapts its q/k/v/o/gate/up/down "
                "projections); export the merged model without --lora-adapter"
            )
        lora = lora_of(record)
        mesh = sharding.make_mesh(ONE_DEVICE, jax.devices()[:1])
        rules = tuple(metadata["config"]["sharding_rules"])
        rules = tuple((name, tuple(t) if isinstance(t, list) else t) for name, t in rules)
        with jax.set_mesh(mesh), flax_spmd.logical_axis_rules(rules):
            target, _ = adapters_target(model_config, lora, mesh, rules)
            adapters = checkpointer.restore_params(step, target)
    out = as_path(out, "export directory")
    if out.exists() and any(out.iterdir()):
        raise ConfigError(f"--out {out} is not empty; choose a new directory")
    out.mkdir(parents=True, exist_ok=True)
    tensors = peft_tensors(adapters, lora, model_config.num_layers)
    write_safetensors(out / "adapter_model.safetensors", tensors, {"format": "pt"})
    config = {
        "peft_type": "LORA",
        "task_type": "CAUSAL_LM",
        "r": lora.rank,
        "lora_alpha": lora.alpha,
        "lora_dropout": 0.0,
        "target_modules": [TARGETS[t][2].split(".")[-1] for t in lora.targets],
        "bias": "none",
        "fan_in_fan_out": False,
        "use_rslora": False,
        "init_lora_weights": True,
        "inference_mode": True,
        # The base is the checkpoint the adapters were trained on: export it with
        # `gptjax export-hf` and load this adapter over it.
        "base_model_name_or_path": record["base"]["workdir"],
    }
    (out / "adapter_config.json").write_text(json.dumps(config, indent=2) + "\n")
    return ["adapter_model.safetensors", "adapter_config.json"]
