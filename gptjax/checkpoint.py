"""Thin Orbax wrapper: self-describing, verified, asynchronous checkpoints of a TrainState.

A checkpoint at step N is the state after N updates. It holds four items:
  params    the model parameters (what `init_from` reads)
  trainer   optimizer state, step and the non-finite counters
  metadata  resolved config, model architecture, phase, mesh, package versions, tokenizer and
            data hashes, and a fingerprint per array leaf (verified on every restore)
  tokenizer the sentencepiece model, so a checkpoint alone can be sampled from
Restores take target shardings, so a checkpoint restores onto any mesh.
"""

from __future__ import annotations

import base64
import dataclasses
import importlib.metadata
import platform
import time

import jax
import jax.numpy as jnp
import orbax.checkpoint as ocp
from flax import nnx

from gptjax.errors import CheckpointError, ConfigError
from gptjax.paths import PathLike, absolute, as_path, tree_size
from gptjax.steps import TrainState

CHECKPOINT_DIR = "checkpoints"
ITEMS = ("params", "trainer", "metadata", "tokenizer")
# Fields that change how a model runs, not what it is: they may differ on restore.
RUNTIME_FIELDS = ("dtype", "remat", "scan_layers", "dropout_rate", "attention")
_PACKAGES = ("jax", "jaxlib", "flax", "optax", "orbax-checkpoint", "gptjax")


def checkpoint_dir(workdir: PathLike):
    # Absolute: Orbax refuses a relative path for some saves (OCDBT array writes).
    return absolute(workdir) / CHECKPOINT_DIR


def _leaf_fingerprint(x: jax.Array) -> jax.Array:
    """A position-sensitive uint32 checksum of a leaf's bits, computed where it lives.

    Each element's bit pattern is multiplied by an odd per-position weight and summed modulo
    2^32, so a flipped byte or two swapped elements change it; no gather to one host.
    """
    if x.dtype.itemsize == 2:
        bits = jax.lax.bitcast_convert_type(x, jnp.uint16).astype(jnp.uint32)
    elif x.dtype.itemsize == 4:
        bits = jax.lax.bitcast_convert_type(x, jnp.uint32)
    else:
        bits = x.astype(jnp.uint32)
    index = jax.lax.iota(jnp.uint32, bits.size).reshape(bits.shape)
    weights = index * jnp.uint32(2654435761) + jnp.uint32(1)  # Knuth's multiplicative hash
    return jnp.sum(bits * weights, dtype=jnp.uint32)


@jax.jit
def _fingerprints(tree):
    return jax.tree.map(_leaf_fingerprint, tree)


def fingerprints(tree) -> dict[str, str]:
    """{leaf path: 8 hex digits} for every array leaf of `tree`."""
    values = jax.device_get(_fingerprints(tree))
    flat = jax.tree_util.tree_leaves_with_path(values)
    return {jax.tree_util.keystr(path): f"{int(v):08x}" for path, v in flat}


def package_versions() -> dict[str, str]:
    versions = {"python": platform.python_version()}
    for name in _PACKAGES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions


def _trainer_tree(state: TrainState) -> dict:
    return {
        "opt_state": state.opt_state,
        "step": state.step,
        "bad_steps": state.bad_steps,
        "skipped_steps": state.skipped_steps,
    }


def _abstract(tree):
    """ShapeDtypeStructs carrying each leaf's target sharding (restores onto that mesh)."""
    return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding), tree)


@dataclasses.dataclass(frozen=True)
class CheckpointInfo:
    step: int
    path: PathLike
    size_bytes: int
    metadata: dict


class Checkpointer:
    """Saves and restores a run's checkpoints under WORKDIR/checkpoints."""

    def __init__(
        self,
        workdir: PathLike,
        *,
        keep_last: int = 2,
        keep_every: int = 0,
        async_save: bool = True,
        read_only: bool = False,
    ):
        self.directory = checkpoint_dir(workdir)
        policy = ocp.checkpoint_managers.LatestN(keep_last)
        if keep_every:
            policy = ocp.checkpoint_managers.AnyPreservationPolicy(
                [policy, ocp.checkpoint_managers.EveryNSteps(keep_every)]
            )
        options = ocp.CheckpointManagerOptions(
            create=not read_only,
            read_only=read_only,
            preservation_policy=policy,
            enable_async_checkpointing=async_save,
            # A save killed mid-flight leaves <step>.orbax-checkpoint-tmp; remove it at start.
            cleanup_tmp_directories=not read_only,
        )
        handlers = {
            "params": ocp.StandardCheckpointHandler(),
            "trainer": ocp.StandardCheckpointHandler(),
            "metadata": ocp.JsonCheckpointHandler(),
            "tokenizer": ocp.JsonCheckpointHandler(),
        }
        try:
            self.manager = ocp.CheckpointManager(
                self.directory, item_names=ITEMS, item_handlers=handlers, options=options
            )
        except (OSError, ValueError) as error:
            raise CheckpointError(f"cannot open checkpoints in {self.directory}: {error}") from None

    def steps(self) -> list[int]:
        return sorted(self.manager.all_steps())

    def latest_step(self) -> int | None:
        return self.manager.latest_step()

    def save(self, state: TrainState, metadata: dict, tokenizer_bytes: bytes, *, force=False):
        """Starts an async save of `state` at its step; returns seconds the caller was blocked."""
        step = int(state.step)
        start = time.perf_counter()
        metadata = metadata | {
            "step": step,
            "fingerprints": {
                "params": fingerprints(state.params),
                "trainer": fingerprints(_trainer_tree(state)),
            },
        }
        args = ocp.args.Composite(
            params=ocp.args.StandardSave(state.params),
            trainer=ocp.args.StandardSave(_trainer_tree(state)),
            metadata=ocp.args.JsonSave(metadata),
            tokenizer=ocp.args.JsonSave({"model_b64": base64.b64encode(tokenizer_bytes).decode()}),
        )
        try:
            self.manager.save(step, args=args, force=force)
        except (OSError, ValueError, RuntimeError) as error:
            raise CheckpointError(
                f"saving checkpoint {step} in {self.directory} failed: {_error_text(error)}"
            ) from None
        return time.perf_counter() - start

    def wait(self) -> None:
        """Blocks until every pending save has committed; a failed save raises CheckpointError."""
        try:
            self.manager.wait_until_finished()
        except Exception as error:  # Orbax re-raises the background thread's error, any type
            raise CheckpointError(
                f"a checkpoint save in {self.directory} failed: {_error_text(error)}; the previous "
                "committed checkpoint is intact"
            ) from None

    def close(self) -> None:
        try:
            self.wait()
        finally:
            self.manager.close()

    def __enter__(self) -> Checkpointer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def reached_preemption(self, step: int) -> bool:
        """True at the step all processes agreed to stop at after a preemption notice (SIGTERM)."""
        return self.manager.reached_preemption(step)

    def metadata(self, step: int) -> dict:
        restored = self._restore(step, ocp.args.Composite(metadata=ocp.args.JsonRestore()))
        return restored["metadata"]

    def tokenizer_bytes(self, step: int) -> bytes:
        restored = self._restore(step, ocp.args.Composite(tokenizer=ocp.args.JsonRestore()))
        return base64.b64decode(restored["tokenizer"]["model_b64"])

    def restore(self, step: int, target: TrainState) -> TrainState:
        """The full state at `step`, placed like `target` (arrays or abstract, with shardings)."""
        args = ocp.args.Composite(
            params=ocp.args.StandardRestore(_abstract(target.params)),
            trainer=ocp.args.StandardRestore(_abstract(_trainer_tree(target))),
        )
        restored = self._restore(step, args)
        trainer = restored["trainer"]
        state = TrainState(
            step=trainer["step"],
            params=restored["params"],
            opt_state=trainer["opt_state"],
            bad_steps=trainer["bad_steps"],
            skipped_steps=trainer["skipped_steps"],
        )
        expected = self.metadata(step)["fingerprints"]
        self._verify(step, "params", state.params, expected["params"])
        self._verify(step, "trainer", _trainer_tree(state), expected["trainer"])
        return state

    def restore_params(self, step: int, target_params) -> nnx.State:
        """Only the parameters at `step` (for `init_from`), verified, placed like the target."""
        args = ocp.args.Composite(params=ocp.args.StandardRestore(_abstract(target_params)))
        params = self._restore(step, args)["params"]
        self._verify(step, "params", params, self.metadata(step)["fingerprints"]["params"])
        return params

    def _restore(self, step: int, args):
        if step not in self.manager.all_steps():
            raise CheckpointError(
                f"no committed checkpoint {step} in {self.directory}; committed: {self.steps()}"
            )
        try:
            return self.manager.restore(step, args=args)
        except Exception as error:  # tensorstore/orbax raise many types; classify by content
            text = _error_text(error)
            damaged = any(word in text for word in ("DATA_LOSS", "checksum", "truncated"))
            if isinstance(error, ValueError | KeyError | TypeError) and not damaged:
                raise CheckpointError(
                    f"checkpoint {step} in {self.directory} does not match this "
                    f"model/optimizer: {text}"
                ) from None
            raise CheckpointError(
                f"checkpoint {step} in {self.directory} is unreadable or corrupt ({text}); "
                f"{self._earlier_hint(step)}"
            ) from None

    def _verify(self, step: int, item: str, tree, expected: dict[str, str]) -> None:
        actual = fingerprints(tree)
        bad = [path for path, value in actual.items() if expected.get(path) != value]
        if bad or set(expected) != set(actual):
            raise CheckpointError(
                f"checkpoint {step} in {self.directory} is corrupt: {item}{bad[0] if bad else ''} "
                f"does not match its recorded fingerprint ({len(bad)} leaves differ); "
                f"{self._earlier_hint(step)}"
            )

    def _earlier_hint(self, step: int) -> str:
        earlier = [s for s in self.steps() if s < step]
        if not earlier:
            return "no earlier checkpoint exists"
        return f"restore an earlier one with --config.checkpoint.resume_step={earlier[-1]}"

    def array_metadata(self, step: int) -> dict:
        """{"params": tree, "trainer": tree} of Orbax ArrayMetadata (shape, dtype, sharding)."""
        if step not in self.manager.all_steps():
            raise CheckpointError(f"no committed checkpoint {step} in {self.directory}")
        metadata = self.manager.item_metadata(step)
        return {"params": metadata["params"], "trainer": metadata["trainer"]}

    def info(self, step: int) -> CheckpointInfo:
        path = self.directory / str(step)
        size = tree_size(path)
        return CheckpointInfo(step, path, size, self.metadata(step))


_DISK_FULL = ("No space left", "File too large", "os_error_code='28'", "os_error_code='27'")


def _error_text(error: BaseException) -> str:
    """A short one-line cause: tensorstore appends kilobytes of JSON spec and long file paths."""
    text = " ".join(str(error).split("[tensorstore_spec")[0].split())
    if any(marker in text for marker in _DISK_FULL):
        return "the disk is full or a file size limit was reached"
    return f"{type(error).__name__}: {text[:300]}"


def check_architecture(saved: dict, model_config) -> None:
    """Refuses a checkpoint whose model differs from the config in any architectural field."""
    current = dataclasses.asdict(model_config)
    diffs = [
        f"model.{key}: checkpoint {saved.get(key)!r}, config {value!r}"
        for key, value in current.items()
        if key not in RUNTIME_FIELDS and saved.get(key) != value
    ]
    if diffs:
        raise ConfigError("checkpoint architecture differs from the config: " + "; ".join(diffs))


def resolve_init_from(path: str):
    """`init_from` names a workdir (latest step) or a step directory WORKDIR/checkpoints/N."""
    candidate = as_path(path, "init_from")
    if candidate.name.isdigit() and candidate.parent.name == CHECKPOINT_DIR:
        return candidate.parent.parent, int(candidate.name)
    if not checkpoint_dir(candidate).is_dir():
        raise ConfigError(
            f"init_from={path!r}: no {CHECKPOINT_DIR}/ directory there; give a workdir or "
            f"WORKDIR/{CHECKPOINT_DIR}/STEP"
        )
    return candidate, None
