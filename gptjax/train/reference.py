"""The DPO phase's frozen reference model: which weights, restored where, or precomputed.

The reference is the checkpoint `init_from` named when the phase started (the SFT model).
Its workdir and step are recorded in every DPO checkpoint's metadata, so a resumed run reloads
exactly those weights even if the SFT workdir has since trained further; the restore verifies
their fingerprints like any other.
"""

from __future__ import annotations

import dataclasses

import jax
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec

from gptjax import sharding
from gptjax.checkpoint import Checkpointer
from gptjax.checkpoint.merged import restore_model_params
from gptjax.data.preferences import PackedPreferences
from gptjax.data.rows import ArrayRows
from gptjax.dpo import answer_logps
from gptjax.errors import CheckpointError, ConfigError
from gptjax.paths import absolute
from gptjax.train.resume import StartPoint


@dataclasses.dataclass(frozen=True, eq=False)
class PairsWithReference(ArrayRows):
    """Packed pairs plus each pair's reference log-probabilities, as extra batch fields
    (`[rows, seq_len]`, column s-1 holding segment s), for `dpo.reference="precomputed"`."""

    pairs: PackedPreferences
    reference_chosen: np.ndarray
    reference_rejected: np.ndarray

    @property
    def arrays(self) -> dict[str, np.ndarray]:
        return self.pairs.arrays | {
            "reference_chosen": self.reference_chosen,
            "reference_rejected": self.reference_rejected,
        }

    @property
    def pad_id(self) -> int:
        return self.pairs.pad_id

    def describe(self) -> str:
        return self.pairs.describe() + "; reference log-probabilities precomputed"


def reference_point(start: StartPoint, checkpointer: Checkpointer) -> dict:
    """{"workdir", "step"} of the reference weights: the init_from checkpoint when the phase
    starts, the one recorded in the run's own checkpoint when it resumes."""
    if start.kind == "fresh":
        raise ConfigError(
            'phase="dpo" needs init_from: the SFT workdir (its weights are the policy\'s start '
            "and the frozen reference)"
        )
    if start.kind == "init_from":
        return {"workdir": str(absolute(start.source)), "step": int(start.step)}
    recorded = checkpointer.metadata(start.step).get("reference")
    if not recorded:
        raise CheckpointError(
            f"checkpoint {start.step} in {checkpointer.directory} records no DPO reference "
            "model; it was not written by a DPO run"
        )
    return recorded


def restore_reference(point: dict, target_params, log, start_params=None):
    """The reference parameters, placed like the policy's (`target_params`: abstract); a LoRA
    checkpoint's adapters merged into its base. `start_params`: a copy of the weights the
    run started from (init_from), which are the reference's when the phase starts."""
    if start_params is not None:
        where = f"{point['workdir']} step {point['step']}"
        log(f"reference model: {where} (frozen; a copy of the starting weights)")
        return start_params
    log(f"reference model: {point['workdir']} step {point['step']} (frozen)")
    return restore_model_params(point["workdir"], point["step"], target_params)


def precompute(graphdef, params, packed: PackedPreferences, *, batch_size: int, mesh, log):
    """`packed` with the reference's answer log-probabilities attached, computed once."""
    from gptjax.data.pipeline import eval_batches

    replicated = NamedSharding(mesh, PartitionSpec())
    fn = jax.jit(lambda p, b: answer_logps(graphdef, p, b)[:2], out_shardings=replicated)
    rows = batch_size // jax.process_count()
    start = jax.process_index() * rows
    chosen, rejected = [], []
    for batch in eval_batches(packed, batch_size=batch_size):
        local = {name: value[start : start + rows] for name, value in batch.items()}
        out = jax.device_get(fn(params, sharding.global_batch_from_local(local, mesh)))
        chosen.append(out[0])
        rejected.append(out[1])
    log(f"precomputed the reference log-probabilities of {packed.num_rows} rows")
    return PairsWithReference(
        packed,
        np.concatenate(chosen)[: packed.num_rows],
        np.concatenate(rejected)[: packed.num_rows],
    )
