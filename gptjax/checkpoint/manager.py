"""The Checkpointer: saves and restores a run's checkpoints (Orbax), verifying every item.

A checkpoint at step N is the state after N updates. It holds four items:
  params    the model parameters (what `init_from` reads)
  trainer   optimizer state, step and the non-finite counters
  metadata  resolved config, model architecture, phase, mesh, package versions, tokenizer and
            data hashes, a fingerprint per array leaf and the tokenizer's digest
  tokenizer the sentencepiece model, so a checkpoint alone can be sampled from
Every load verifies what it reads (`gptjax.checkpoint.integrity`); damage is a CheckpointError
(exit 74) naming the item and the earlier step to use. Restores take target shardings, so a
checkpoint restores onto any mesh.
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import json
import logging
import threading
import time

import jax
import orbax.checkpoint as ocp
from absl import logging as absl_logging
from flax import nnx

from gptjax.checkpoint import integrity
from gptjax.errors import CheckpointError
from gptjax.paths import PathLike, absolute, tree_size
from gptjax.steps import TrainState

CHECKPOINT_DIR = "checkpoints"
SET_ASIDE_DIR = "checkpoints-set-aside"  # newer checkpoints moved away by a resume_step
ITEMS = ("params", "trainer", "metadata", "tokenizer")
ARRAY_ITEMS = ("params", "trainer")
RESUME_FLAG = "--config.checkpoint.resume_step={step}"
STEP_FLAG = "--step {step}"  # sample, chat, eval, export-hf, checkpoints --tree


class _LoopOnlyPreemptionManager(ocp.CheckpointManager):
    """An Orbax CheckpointManager whose preemption check answers only the training loop.

    JAX's preemption sync point is "the highest step any process last reported, plus one",
    and every call of `reached_preemption(step)` reports `step`. Orbax's own finalize thread
    also calls it, with the step of the save it just committed, which lags the loop: a notice
    (SIGTERM) handled right after such a call set the sync point to a step the loop had
    already passed, and the run ignored the notice to its end. Only the thread that made the
    manager (the one that runs the loop and calls save) reports steps.
    """

    def __init__(self, *args, **kwargs):
        self._loop_thread = threading.get_ident()
        super().__init__(*args, **kwargs)

    def reached_preemption(self, step: int) -> bool:
        if threading.get_ident() != self._loop_thread:
            return False  # Orbax's finalize thread: it only times the preemption save
        return super().reached_preemption(step)


def checkpoint_dir(workdir: PathLike):
    # Absolute: Orbax refuses a relative path for some saves (OCDBT array writes).
    return absolute(workdir) / CHECKPOINT_DIR


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


class _ReadOnlyNotice(logging.Filter):
    """Orbax warns "Given directory is read only=..." each time a read-only manager opens a
    directory: the mode gptjax asked for, not news to anyone (a `gptjax.load` in a notebook
    printed it twice). Only that record is dropped; Orbax's other logging is left as it is."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith("Given directory is read only")


def _drop_read_only_notices() -> None:
    logger = absl_logging.get_absl_logger()  # where Orbax writes (see gptjax.cli.quiet)
    if not any(isinstance(f, _ReadOnlyNotice) for f in logger.filters):
        logger.addFilter(_ReadOnlyNotice())


class Checkpointer:
    """Saves and restores a run's checkpoints under WORKDIR/checkpoints.

    `recovery_flag` is how the caller's user picks another step ("{step}" is filled in); an
    error about a damaged checkpoint names it with the latest earlier step.
    """

    def __init__(
        self,
        workdir: PathLike,
        *,
        keep_last: int = 2,
        keep_every: int = 0,
        async_save: bool = True,
        read_only: bool = False,
        recovery_flag: str = RESUME_FLAG,
    ):
        self.directory = checkpoint_dir(workdir)
        self.recovery_flag = recovery_flag
        if read_only:
            _drop_read_only_notices()
        self._pending: int | None = None  # the step of the save that may still be writing
        self._verified: dict[int, dict] = {}  # step -> its metadata, once verified
        policy = ocp.checkpoint_managers.LatestN(keep_last)
        if keep_every:
            policy = ocp.checkpoint_managers.AnyPreservationPolicy(
                [policy, ocp.checkpoint_managers.EveryNSteps(keep_every)]
            )
        options = ocp.CheckpointManagerOptions(
            create=not read_only,
            read_only=read_only,
            # Orbax would warn that it sets this itself for a read-only manager.
            save_interval_steps=0 if read_only else 1,
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
            self.manager = _LoopOnlyPreemptionManager(
                self.directory, item_names=ITEMS, item_handlers=handlers, options=options
            )
        except (OSError, ValueError) as error:
            raise CheckpointError(f"cannot open checkpoints in {self.directory}: {error}") from None

    def steps(self) -> list[int]:
        return sorted(self.manager.all_steps())

    def latest_step(self) -> int | None:
        return self.manager.latest_step()

    # --- saving ---------------------------------------------------------------------------

    def save(self, state: TrainState, metadata: dict, tokenizer_bytes: bytes, *, force=False):
        """Starts an async save of `state` at its step; returns seconds the caller was blocked.

        A save Orbax declines (a checkpoint at or after this step already exists) is an error:
        the caller asked for this step to be kept.
        """
        step = int(state.step)
        start = time.perf_counter()
        self.wait()  # a failed earlier save is reported under its own step
        metadata = integrity.normalized(
            metadata
            | {
                "step": step,
                "fingerprints": {
                    "params": integrity.fingerprints(state.params),
                    "trainer": integrity.fingerprints(_trainer_tree(state)),
                },
                "digests": {"tokenizer": hashlib.sha256(tokenizer_bytes).hexdigest()},
            }
        )
        args = ocp.args.Composite(
            params=ocp.args.StandardSave(state.params),
            trainer=ocp.args.StandardSave(_trainer_tree(state)),
            metadata=ocp.args.JsonSave(metadata),
            tokenizer=ocp.args.JsonSave({"model_b64": base64.b64encode(tokenizer_bytes).decode()}),
        )
        record = {integrity.METADATA_DIGEST_KEY: integrity.json_digest(metadata)}
        try:
            saved = self.manager.save(step, args=args, force=force, custom_metadata=record)
        except (OSError, ValueError, RuntimeError) as error:
            raise CheckpointError(self._save_failed(step, error)) from None
        if not saved:
            later = [s for s in self.steps() if s >= step]
            raise CheckpointError(
                f"checkpoint {step} was not saved: {self.directory} already holds checkpoint "
                f"{later[-1] if later else '?'} (Orbax saves no step at or below its latest); "
                f"move the later checkpoints away or resume from the latest"
            )
        self._pending = step
        return time.perf_counter() - start

    def check(self, at_step: int) -> None:
        """Raises CheckpointError at once when the pending save has failed (a full disk), so
        the run stops within a step of the failure; no-op while it is still writing."""
        if self._pending is None or self.manager.is_saving_in_progress():
            return
        self.wait(stopped_at=at_step)

    def wait(self, stopped_at: int | None = None) -> None:
        """Blocks until every pending save has committed; a failed save raises CheckpointError
        (once: Orbax would raise its error again at every later wait)."""
        step, self._pending = self._pending, None
        if step is None:
            return
        try:
            self.manager.wait_until_finished()
        except Exception as error:  # Orbax re-raises the background thread's error, any type
            message = self._save_failed(step, error)
            if stopped_at is not None:
                message += f"; the run stopped at step {stopped_at}"
            raise CheckpointError(message) from None

    def _save_failed(self, step: int, error: BaseException) -> str:
        name = f"checkpoint {step}"
        committed = [s for s in self.steps() if s < step]
        kept = f"checkpoint {committed[-1]} is intact" if committed else "no earlier checkpoint"
        return f"saving {name} in {self.directory} failed: {integrity.error_text(error)}; {kept}"

    def close(self) -> None:
        """Waits for the pending save, then stops Orbax's threads (also after a failed save:
        left running, they print tracebacks at interpreter exit, after gptjax's error line)."""
        try:
            self.wait()
        finally:
            try:
                self.manager.close()
            except Exception:  # noqa: BLE001 -- the failed save's error again, already raised
                _close_internals(self.manager)

    def __enter__(self) -> Checkpointer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def reached_preemption(self, step: int) -> bool:
        """True at the step all processes agreed to stop at after a preemption notice (SIGTERM)."""
        return self.manager.reached_preemption(step)

    def set_aside(self, after: int) -> list[tuple[int, object]]:
        """Moves the checkpoints later than `after` to WORKDIR/checkpoints-set-aside/STEP (a
        numbered suffix if that exists) and returns [(step, new path)]. Orbax would otherwise
        keep them as the latest and decline to save the steps the run is about to redo."""
        moved = []
        for step in [s for s in self.steps() if s > after]:
            target = self.directory.parent / SET_ASIDE_DIR / str(step)
            suffix = 1
            while target.exists():
                target, suffix = target.with_name(f"{step}.{suffix}"), suffix + 1
            target.parent.mkdir(parents=True, exist_ok=True)
            try:
                (self.directory / str(step)).rename(target)
            except OSError as error:
                raise CheckpointError(
                    f"cannot move checkpoint {step} aside to {target}: {error}"
                ) from None
            moved.append((step, target))
        return moved

    def reload(self) -> None:
        """Re-reads the directory (another process moved checkpoints)."""
        self.manager.reload()

    # --- loading and verifying ------------------------------------------------------------

    def metadata(self, step: int) -> dict:
        """The metadata item of `step`, verified against the digest in its commit record."""
        if step in self._verified:
            return self._verified[step]
        metadata = self._json_item(step, "metadata")
        if not isinstance(metadata, dict):
            self._damaged(step, "the metadata item is not a JSON object")
        why = integrity.metadata_damage(metadata, self._commit_record(step))
        if why:
            self._damaged(step, why)
        self._verified[step] = metadata
        return metadata

    def _json_item(self, step: int, item: str):
        args = ocp.args.Composite(**{item: ocp.args.JsonRestore()})
        return self._restore(step, args, item)[item]

    def _commit_record(self, step: int) -> dict:
        """custom_metadata of Orbax's `_CHECKPOINT_METADATA` of the step ({} if unreadable)."""
        path = self.directory / str(step) / "_CHECKPOINT_METADATA"
        try:
            record = json.loads(path.read_text()).get("custom_metadata") or {}
        except (OSError, ValueError, AttributeError):
            return {}
        return record if isinstance(record, dict) else {}

    def tokenizer_bytes(self, step: int) -> bytes:
        item = self._json_item(step, "tokenizer")
        model, why = integrity.tokenizer_damage(item, self.metadata(step))
        if why:
            self._damaged(step, why)
        return model

    def verify_items(self, step: int) -> dict:
        """Checks what can be checked without reading array data: the metadata and tokenizer
        bytes, and that each array item's index lists the arrays that were saved. Returns the
        metadata. Every load path calls it, whichever items it then reads."""
        metadata = self.metadata(step)
        self.tokenizer_bytes(step)
        if not integrity.is_verifiable(metadata, self._commit_record(step)):
            return metadata  # an old checkpoint: its fingerprints are checked after a restore
        saved = self._array_index(step)
        for item in ARRAY_ITEMS:
            why = integrity.structure_damage(item, saved.get(item), metadata["fingerprints"][item])
            if why:
                self._damaged(step, why)
        return metadata

    def _array_index(self, step: int) -> dict:
        """{item: Orbax's metadata tree of it}; an item whose index cannot be read is absent."""
        found = {}
        for item in ARRAY_ITEMS:  # one at a time, so damage is put down to the right item
            try:
                found[item] = ocp.StandardCheckpointHandler().metadata(
                    self.directory / str(step) / item
                )
            except Exception:  # noqa: BLE001, S112 -- any failure to read the index is damage
                continue
        return found

    def restore(self, step: int, target: TrainState) -> TrainState:
        """The full state at `step`, placed like `target` (arrays or abstract, with shardings)."""
        metadata = self.verify_items(step)
        args = ocp.args.Composite(
            params=ocp.args.StandardRestore(_abstract(target.params)),
            trainer=ocp.args.StandardRestore(_abstract(_trainer_tree(target))),
        )
        restored = self._restore(step, args, "params and trainer")
        trainer = restored["trainer"]
        state = TrainState(
            step=trainer["step"],
            params=restored["params"],
            opt_state=trainer["opt_state"],
            bad_steps=trainer["bad_steps"],
            skipped_steps=trainer["skipped_steps"],
        )
        expected = metadata["fingerprints"]
        self._verify(step, "params", state.params, expected["params"])
        self._verify(step, "trainer", _trainer_tree(state), expected["trainer"])
        return state

    def restore_params(self, step: int, target_params) -> nnx.State:
        """Only the parameters at `step` (for `init_from`), verified, placed like the target."""
        metadata = self.verify_items(step)
        args = ocp.args.Composite(params=ocp.args.StandardRestore(_abstract(target_params)))
        params = self._restore(step, args, "params")["params"]
        self._verify(step, "params", params, metadata["fingerprints"]["params"])
        return params

    def _restore(self, step: int, args, what: str):
        if step not in self.manager.all_steps():
            raise CheckpointError(
                f"no committed checkpoint {step} in {self.directory}; committed: {self.steps()}"
            )
        try:
            return self.manager.restore(step, args=args)
        except Exception as error:  # tensorstore/orbax raise many types; classify by content
            # The items' indexes were verified before any array restore (verify_items), so a
            # tree that does not fit the target is a config/optimizer change, not damage.
            if what != "metadata" and what != "tokenizer" and _is_tree_mismatch(error):
                raise CheckpointError(
                    f"checkpoint {step} in {self.directory} does not match this model/optimizer "
                    f"(a different optimizer or phase?): {integrity.error_text(error)[:200]}"
                ) from None
            self._damaged(step, f"its {what} cannot be read: {integrity.damage_text(error)}")

    def verify_arrays(self, step: int) -> int:
        """Reads every array of every item onto this host's CPU and checks it against its
        recorded fingerprint: the full check of `gptjax checkpoints --verify` (a load checks
        the items it reads; sample & co. never read the optimizer state). Returns the bytes read.
        """
        metadata = self.verify_items(step)
        host = jax.sharding.SingleDeviceSharding(jax.devices("cpu")[0])
        index, read = self._array_index(step), 0
        for item in ARRAY_ITEMS:
            if index.get(item) is None:  # an old checkpoint's damage: no recorded leaves
                self._damaged(step, f"the {item} item is missing or its index is unreadable")
            abstract = jax.tree.map(
                lambda leaf: jax.ShapeDtypeStruct(leaf.shape, leaf.dtype, sharding=host),
                index[item],
            )
            args = ocp.args.Composite(**{item: ocp.args.StandardRestore(abstract)})
            tree = self._restore(step, args, item)[item]
            self._verify(step, item, tree, metadata["fingerprints"][item])
            read += sum(leaf.nbytes for leaf in jax.tree.leaves(tree))
        return read

    def _verify(self, step: int, item: str, tree, expected: dict[str, str]) -> None:
        # Paths compared as `leaf_name` spells them: a tree restored from Orbax's index (dicts)
        # and the live one (attributes, nnx Variables) name the same leaf differently.
        actual = {integrity.leaf_name(p): v for p, v in integrity.fingerprints(tree).items()}
        expected = {integrity.leaf_name(p): v for p, v in expected.items()}
        bad = [path for path, value in actual.items() if expected.get(path) != value]
        if bad or set(expected) != set(actual):
            self._damaged(
                step,
                f"{item}{bad[0] if bad else ''} does not match its recorded fingerprint "
                f"({len(bad)} leaves differ)",
            )

    def _damaged(self, step: int, why: str):
        raise CheckpointError(
            f"checkpoint {step} in {self.directory} is damaged: {why}; {self.earlier_hint(step)}"
        )

    def earlier_hint(self, step: int) -> str:
        earlier = [s for s in self.steps() if s < step]
        if not earlier:
            return "no earlier checkpoint exists"
        flag = self.recovery_flag.format(step=earlier[-1])
        return f"use the earlier checkpoint {earlier[-1]} with {flag}"

    def array_metadata(self, step: int) -> dict:
        """{"params": tree, "trainer": tree} of Orbax ArrayMetadata (shape, dtype, sharding)."""
        if step not in self.manager.all_steps():
            raise CheckpointError(f"no committed checkpoint {step} in {self.directory}")
        self.verify_items(step)
        found = self._array_index(step)
        for item in ARRAY_ITEMS:
            if found.get(item) is None:  # an old checkpoint's damage: no recorded leaves
                self._damaged(step, f"the {item} item is missing or its index is unreadable")
        return found

    def info(self, step: int) -> CheckpointInfo:
        path = self.directory / str(step)
        size = tree_size(path)
        return CheckpointInfo(step, path, size, self.metadata(step))


def _is_tree_mismatch(error: BaseException) -> bool:
    """Orbax's complaint that the target tree differs from the saved one (not damage)."""
    text = integrity.chain_text(error)
    damaged = any(word in text for word in ("DATA_LOSS", "checksum", "truncated", "NOT_FOUND"))
    return isinstance(error, ValueError | KeyError | TypeError) and not damaged


def _close_internals(manager) -> None:
    """What `CheckpointManager.close()` closes after its wait: Orbax 0.12 re-raises a failed
    save's error from that wait on every call and so never reaches these after a failure."""
    for name in (
        "_checkpointer",
        "_non_blocking_metadata_store",
        "_blocking_metadata_store",
        "_checkpoint_deleter",
    ):
        part = getattr(manager, name, None)
        try:
            if part is not None:
                part.close()
        except Exception:  # noqa: BLE001, S112 -- closing what is left; the error was reported
            continue
