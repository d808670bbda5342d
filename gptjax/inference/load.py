"""A trained model loaded for sampling, chat and evaluation: parameters, tokenizer, mesh.

Everything comes from the checkpoint itself (architecture, tokenizer, sharding rules), so
`gptjax sample|chat|eval WORKDIR` needs no config file. Parameters are restored directly onto
a mesh built from this host's devices (by default pure data parallel: every device holds the
whole model, which suits the small models this loads on one host; pass another mesh to split
heads and mlp over `tensor`).
"""

from __future__ import annotations

import contextlib
import dataclasses

import jax
from etils import epath
from flax import nnx
from flax.core import spmd as flax_spmd

from gptjax import sharding
from gptjax.chat_format import chat_format_of
from gptjax.checkpoint import CHECKPOINT_DIR, STEP_FLAG, Checkpointer, checkpoint_dir
from gptjax.checkpoint.merged import restore_model_params
from gptjax.errors import CheckpointError, ConfigError
from gptjax.model import ModelConfig, Transformer
from gptjax.objectives import objective_for
from gptjax.paths import PathLike, as_path, refuse_a_file, refuse_a_missing_workdir
from gptjax.steps import model_graphdef
from gptjax.tokenizer import Tokenizer, tokenizer_from_bytes

DEFAULT_MESH = {"data": -1, "fsdp": 1, "tensor": 1}


@dataclasses.dataclass
class LoadedModel:
    workdir: epath.Path
    step: int
    phase: str  # "pretrain", "sft" or "dpo": chat models are sft/dpo
    model_config: ModelConfig
    graphdef: object
    params: nnx.State
    tokenizer: Tokenizer
    mesh: jax.sharding.Mesh
    rules: tuple
    metadata: dict  # the checkpoint's own record: config, model, mesh, versions, ...

    @contextlib.contextmanager
    def activated(self):
        """The mesh and sharding rules the parameters were placed with (for jit and constrain)."""
        with jax.set_mesh(self.mesh), flax_spmd.logical_axis_rules(self.rules):
            yield

    @property
    def is_chat(self) -> bool:
        return objective_for(self.phase).chat

    @property
    def chat_format(self):
        """How conversations become ids (gptjax.chat_format): the model's own template when
        import-hf recorded one, else gptjax's."""
        return chat_format_of(self.metadata)

    def describe(self) -> str:
        cfg = self.model_config
        return (
            f"{self.workdir} step {self.step} ({self.phase}): {cfg.num_layers}x{cfg.embed_dim}, "
            f"vocab {cfg.vocab_size}, context {cfg.max_seq_len} tokens"
        )


def parse_mesh(text: str | None) -> dict:
    """`data=1,fsdp=1,tensor=-1` -> {"data": 1, "fsdp": 1, "tensor": -1}; None -> default."""
    if not text:
        return dict(DEFAULT_MESH)
    mesh = dict.fromkeys(sharding.MESH_AXES, 1)
    for item in text.split(","):
        axis, _, value = item.partition("=")
        if axis not in mesh or not value.lstrip("-").isdigit():
            raise ConfigError(
                f"--mesh {text!r}: expected AXIS=N items over {sharding.MESH_AXES}, "
                "e.g. data=2,tensor=4 (-1 = the remaining devices)"
            )
        mesh[axis] = int(value)
    return mesh


def _rules_from_json(rules: list) -> tuple:
    """JSON turned the rules' tuples into lists; flax wants (name, axis | tuple | None)."""
    return tuple(
        (name, tuple(target) if isinstance(target, list) else target) for name, target in rules
    )


def workdir_and_step(path: PathLike) -> tuple[epath.Path, int | None]:
    """(workdir, step) of a workdir or WORKDIR/checkpoints/STEP (step None for a workdir);
    ConfigError (exit 2) when that workdir does not exist or is a file."""
    path = as_path(path, "checkpoint path")
    refuse_a_file(path)
    workdir, named_step = path, None
    if path.name.isdigit() and path.parent.name == CHECKPOINT_DIR:
        workdir, named_step = path.parent.parent, int(path.name)
    # Only the workdir must exist: a missing STEP inside it is a missing checkpoint (exit 74),
    # as `--step STEP` is.
    refuse_a_missing_workdir(workdir)
    return workdir, named_step


def load_model(path: PathLike, *, step: int | None = None, mesh: dict | None = None):
    """The parameters of checkpoint `step` (default: the latest) of a workdir, sharded.

    `path` is a workdir or WORKDIR/checkpoints/STEP. A LoRA run's checkpoint loads as its
    base with the adapters merged into the weights.
    """
    workdir, named_step = workdir_and_step(path)
    if not checkpoint_dir(workdir).is_dir():
        raise CheckpointError(f"{workdir} has no {CHECKPOINT_DIR}/ directory: train a model there")
    step = named_step if step is None else step
    with Checkpointer(workdir, read_only=True, recovery_flag=STEP_FLAG) as checkpointer:
        steps = checkpointer.steps()
        if not steps:
            raise CheckpointError(f"{checkpoint_dir(workdir)} holds no committed checkpoint")
        step = steps[-1] if step is None else step
        metadata = checkpointer.metadata(step) if step in steps else None
        if metadata is None:
            raise CheckpointError(f"no committed checkpoint {step} in {workdir}; have {steps}")
        # The plain attention path: a fused training kernel (splash, cudnn) runs only on its own
        # platform, while the checkpoint may be sampled or evaluated anywhere (same numbers).
        # The plain output head too: evaluation rows need not be a multiple of the training
        # run's head_chunk_len (gptjax.chunked_head gives the same numbers).
        runtime = {"attention": "xla", "head_chunk_len": 0}
        model_config = ModelConfig(**(metadata["model"] | runtime))
        rules = _rules_from_json(metadata["config"]["sharding_rules"])
        device_mesh = sharding.make_mesh(mesh or DEFAULT_MESH)
        create = lambda: nnx.state(Transformer(model_config, rngs=nnx.Rngs(0)))
        with jax.set_mesh(device_mesh), flax_spmd.logical_axis_rules(rules):
            target, _ = sharding.plan_state(create, device_mesh, rules)
            # A LoRA checkpoint's adapters come merged into their base: one plain model.
            params = restore_model_params(workdir, step, target, STEP_FLAG)
        tokenizer = tokenizer_from_bytes(
            checkpointer.tokenizer_bytes(step), name=f"{workdir} step {step}"
        )
    return LoadedModel(
        workdir=workdir,
        step=step,
        phase=metadata["phase"],
        model_config=model_config,
        graphdef=model_graphdef(model_config),
        params=params,
        tokenizer=tokenizer,
        mesh=device_mesh,
        rules=rules,
        metadata=metadata,
    )
