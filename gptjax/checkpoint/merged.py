"""A checkpoint's model weights whether it holds them all or only LoRA adapters.

A LoRA run's checkpoints hold its adapters and, in their metadata, `lora`: the rank, alpha and
targets, and `base`, the checkpoint they adapt (workdir, step and a digest of its parameter
fingerprints). `restore_model_params` rebuilds the plain weights W + scale·A·B from both; the
base is itself restored this way, so adapters trained over a LoRA-finetuned model (a LoRA DPO
over a LoRA SFT) resolve down the chain.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json

import jax
from flax import nnx
from flax.core import spmd as flax_spmd

from gptjax import sharding
from gptjax.checkpoint.manager import RESUME_FLAG, Checkpointer
from gptjax.errors import CheckpointError
from gptjax.lora import LoraConfig, merge_into_base, split_adapters
from gptjax.model import ModelConfig, Transformer
from gptjax.paths import absolute


def lora_record(lora: LoraConfig, base_workdir, base_step: int) -> dict:
    """The `lora` metadata of a LoRA run's checkpoints: its settings and the base it adapts."""
    with Checkpointer(base_workdir, read_only=True) as checkpointer:
        digest = params_digest(checkpointer.metadata(base_step))
    return {
        "rank": lora.rank,
        "alpha": lora.alpha,
        "targets": list(lora.targets),
        "base": {"workdir": str(absolute(base_workdir)), "step": int(base_step), "digest": digest},
    }


def lora_of(record: dict) -> LoraConfig:
    return LoraConfig(int(record["rank"]), float(record["alpha"]), tuple(record["targets"]))


def params_digest(metadata: dict) -> str:
    """Identifies a checkpoint's parameters by their recorded per-leaf fingerprints."""
    fingerprints = metadata["fingerprints"]["params"]
    return hashlib.sha256(json.dumps(fingerprints, sort_keys=True).encode()).hexdigest()


def adapters_target(model_config: ModelConfig, lora: LoraConfig, mesh, rules):
    """(abstract adapters with shardings, shardings) of a LoRA model on `mesh`."""
    model_config = dataclasses.replace(model_config, attention="xla")  # shapes only

    def create():
        model = Transformer(model_config, rngs=nnx.Rngs(0), lora=lora)
        return split_adapters(nnx.state(model))[0]

    return sharding.plan_state(create, mesh, rules)


def restore_base(record: dict, target_params) -> nnx.State:
    """The plain weights of the base a LoRA record names, checked against its digest."""
    base = record["base"]
    with Checkpointer(base["workdir"], read_only=True) as checkpointer:
        if base["step"] not in checkpointer.steps():
            raise CheckpointError(
                f"the LoRA base checkpoint {base['workdir']} step {base['step']} is gone: the "
                "adapters need the exact weights they were trained on"
            )
        if params_digest(checkpointer.metadata(base["step"])) != base["digest"]:
            raise CheckpointError(
                f"the LoRA base checkpoint {base['workdir']} step {base['step']} holds other "
                "weights than the adapters were trained on (its fingerprints changed)"
            )
    return restore_model_params(base["workdir"], base["step"], target_params)


def restore_model_params(
    workdir, step: int, target_params, recovery_flag: str = RESUME_FLAG, checkpointer=None
) -> nnx.State:
    """The plain model parameters of checkpoint `step` of `workdir`, placed like
    `target_params` (abstract, with shardings); a LoRA checkpoint's adapters merged in.
    A damaged checkpoint's error names `recovery_flag`, the way to the earlier step for the
    command that is loading it (resume_step, --step, init_from). `checkpointer`: one already
    open on `workdir` (left open), instead of opening another."""
    if checkpointer is None:
        with Checkpointer(workdir, read_only=True, recovery_flag=recovery_flag) as opened:
            return restore_model_params(workdir, step, target_params, checkpointer=opened)
    metadata = checkpointer.metadata(step)
    record = metadata.get("lora")
    if record is None:
        return checkpointer.restore_params(step, target_params)
    mesh = jax.tree.leaves(target_params)[0].sharding.mesh
    rules = tuple(flax_spmd.get_logical_axis_rules())
    lora = lora_of(record)
    target, _ = adapters_target(ModelConfig(**metadata["model"]), lora, mesh, rules)
    adapters = checkpointer.restore_params(step, target)
    base = restore_base(record, target_params)
    shardings = jax.tree.map(lambda leaf: leaf.sharding, target_params)
    merge = jax.jit(lambda b, a: merge_into_base(b, a, lora), out_shardings=shardings)
    return merge(base, adapters)
