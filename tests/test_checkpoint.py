"""Checkpoints in-process: restore onto other meshes, corruption detection, architecture check."""

import dataclasses
from pathlib import Path

import jax
import numpy as np
import pytest
from test_train_step import MODEL, make_batch, run_steps, setup

from gptjax.checkpoint import Checkpointer, check_architecture
from gptjax.errors import CheckpointError, ConfigError

SAVED_MESH = dict(data=4, fsdp=2, tensor=1)


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """A workdir with checkpoints at steps 1 and 2 saved on (data=4, fsdp=2), and the loss of
    the step that follows step 2 on that mesh."""
    workdir = tmp_path_factory.mktemp("ckpt")
    step_fn, state, mesh = setup(SAVED_MESH)
    checkpointer = Checkpointer(workdir, keep_last=3)
    for seed in (0, 1):
        state, _ = run_steps(step_fn, state, mesh, [make_batch(seed=seed)])
        metadata = {"model": dataclasses.asdict(MODEL), "phase": "pretrain", "mesh": SAVED_MESH}
        checkpointer.save(state, metadata, b"tokenizer-bytes")
    checkpointer.close()
    _, metrics = run_steps(step_fn, state, mesh, [make_batch(seed=2)])
    return workdir, float(metrics[0]["loss"])


def _restore_and_step(workdir, mesh_shape, devices=None):
    step_fn, target, mesh = setup(mesh_shape, devices=devices)
    state = Checkpointer(workdir, read_only=True).restore(2, target)
    assert int(state.step) == 2
    _, metrics = run_steps(step_fn, state, mesh, [make_batch(seed=2)])
    return state, float(metrics[0]["loss"])


@pytest.mark.parametrize(
    "mesh_shape",
    [
        # ~25 s with its fixture on 2 cores; test_restore_onto_fewer_devices stays fast.
        pytest.param(dict(data=2, tensor=4), marks=pytest.mark.slow),
        pytest.param(dict(data=8), marks=pytest.mark.slow),
        pytest.param(dict(fsdp=8), marks=pytest.mark.slow),
    ],
    ids=["data2-tensor4", "data8", "fsdp8"],
)
def test_restore_onto_another_mesh_continues_training(saved, mesh_shape):
    workdir, expected_loss = saved
    state, loss = _restore_and_step(workdir, mesh_shape)
    assert loss == pytest.approx(expected_loss, rel=1e-5)
    up = state.params["blocks"]["mlp"]["up_DF"][...]
    assert len(up.sharding.device_set) == 8
    assert state.step.sharding.mesh.shape == up.sharding.mesh.shape  # scalars on the mesh too


def test_restore_onto_fewer_devices(saved):
    workdir, expected_loss = saved
    state, loss = _restore_and_step(workdir, dict(data=2, fsdp=2), devices=jax.devices()[:4])
    assert loss == pytest.approx(expected_loss, rel=1e-5)
    assert len(state.params["embed_VD"][...].sharding.device_set) == 4


def test_checkpoint_keeps_metadata_and_tokenizer(saved):
    workdir, _ = saved
    checkpointer = Checkpointer(workdir, read_only=True)
    assert checkpointer.steps() == [1, 2]
    metadata = checkpointer.metadata(2)
    assert metadata["step"] == 2 and metadata["model"]["num_layers"] == MODEL.num_layers
    assert set(metadata["fingerprints"]) == {"params", "trainer"}
    assert checkpointer.tokenizer_bytes(2) == b"tokenizer-bytes"


def _data_files(step_dir: Path) -> list[Path]:
    return sorted(f for f in (step_dir / "params").rglob("*") if f.is_file() and "/d/" in str(f))


@pytest.mark.slow  # ~10 s on 2 cores; test_checkpoint_integrity covers damage fast
def test_a_flipped_byte_never_restores_silently(saved, tmp_path):
    """Flip one byte in each of the checkpoint's data files in turn: every restore either
    raises CheckpointError (exit 74, naming the earlier step) or returns the exact original
    values (the byte was outside any array's data). Never wrong values."""
    import shutil

    _, target, _ = setup(SAVED_MESH)
    original = jax.device_get(Checkpointer(saved[0], read_only=True).restore(2, target).params)
    detected = 0
    for index in range(len(_data_files(saved[0] / "checkpoints" / "2"))):
        workdir = tmp_path / f"copy{index}"
        shutil.copytree(saved[0], workdir)
        data_file = _data_files(workdir / "checkpoints" / "2")[index]
        raw = bytearray(data_file.read_bytes())
        raw[len(raw) // 2] ^= 0x01
        data_file.write_bytes(bytes(raw))
        with Checkpointer(workdir, read_only=True) as checkpointer:
            try:
                restored = jax.device_get(checkpointer.restore(2, target).params)
            except CheckpointError as error:
                assert error.exit_code == 74
                assert "checkpoint 2" in str(error) and "resume_step=1" in str(error)
                assert int(checkpointer.restore(1, target).step) == 1
                detected += 1
                continue
        for a, b in zip(jax.tree.leaves(restored), jax.tree.leaves(original), strict=True):
            np.testing.assert_array_equal(a, b)
    assert detected >= 1


def test_a_different_architecture_is_refused(saved):
    metadata = Checkpointer(saved[0], read_only=True).metadata(2)
    check_architecture(metadata["model"], dataclasses.replace(MODEL, remat="full"))
    with pytest.raises(ConfigError, match="model.num_layers"):
        check_architecture(metadata["model"], dataclasses.replace(MODEL, num_layers=3))


def test_fingerprints_change_with_any_element():
    from gptjax.checkpoint import fingerprints

    x = np.arange(12, dtype=np.float32).reshape(3, 4)
    base = fingerprints({"x": x})
    swapped = x.copy()
    swapped[0, 0], swapped[0, 1] = x[0, 1], x[0, 0]
    assert fingerprints({"x": swapped}) != base
    nudged = x.copy()
    nudged[2, 3] = np.nextafter(x[2, 3], np.float32(100))
    assert fingerprints({"x": nudged}) != base
    assert fingerprints({"x": x.copy()}) == base


def test_checkpoints_listing_and_tree(saved):
    from gptjax.cli.runs import checkpoint_tree, list_checkpoints

    lines = list_checkpoints(saved[0])
    assert len(lines) == 2 and lines[1].startswith("step        2")
    assert "pretrain" in lines[1] and "data=4,fsdp=2" in lines[1] and "KB" in lines[1]
    tree = checkpoint_tree(saved[0], 1)
    assert tree[0].startswith("checkpoint 1")
    up = next(line for line in tree if line.startswith("params['blocks']['mlp']['up_DF']"))
    assert "(2, 32, 64) float32" in up and "fsdp" in up
    assert any(line.startswith("trainer['step'] () int32") for line in tree)


@pytest.mark.slow  # ~10 s on 2 cores: a real run with a preemption notice
def test_only_the_training_thread_reports_steps_to_the_preemption_sync(tmp_path, monkeypatch):
    """JAX's sync point is the last reported step + 1. Orbax's finalize thread reports each
    committed save's (older) step; a SIGTERM handled just after that set a sync point the loop
    had already passed, and the run ignored the notice (seen as a flaky SIGTERM test)."""
    import threading

    from jax.experimental import multihost_utils

    reports = []

    def spy(step):
        reports.append((step, threading.get_ident()))
        return False

    monkeypatch.setattr(multihost_utils, "reached_preemption_sync_point", spy)
    step_fn, state, mesh = setup(SAVED_MESH)
    metadata = {"model": dataclasses.asdict(MODEL), "phase": "pretrain", "mesh": SAVED_MESH}
    with Checkpointer(tmp_path, keep_last=3) as checkpointer:
        for seed in (0, 1):
            state, _ = run_steps(step_fn, state, mesh, [make_batch(seed=seed)])
            checkpointer.save(state, metadata, b"tokenizer-bytes")
            assert checkpointer.reached_preemption(seed + 1) is False
        checkpointer.wait()
    assert checkpointer.steps() == [1, 2]
    assert reports and {thread for _, thread in reports} == {threading.get_ident()}


def test_restore_model_params_reads_through_an_open_checkpointer(saved, monkeypatch):
    """A full finetune's start restores its weights through the Checkpointer it already
    holds (resume.restore_start): no second one is opened, and the weights are step 2's."""
    from gptjax.checkpoint import merged

    workdir, _ = saved
    _, target, _ = setup(SAVED_MESH)
    expected = Checkpointer(workdir, read_only=True).restore(2, target).params
    with Checkpointer(workdir, read_only=True) as checkpointer:

        def refuse(*args, **kwargs):
            raise AssertionError("a second Checkpointer was opened")

        monkeypatch.setattr(merged, "Checkpointer", refuse)
        params = merged.restore_model_params(workdir, 2, target.params, checkpointer=checkpointer)
    for got, want in zip(jax.tree.leaves(params), jax.tree.leaves(expected), strict=True):
        np.testing.assert_array_equal(np.asarray(got), np.asarray(want))


def test_a_dpo_start_keeps_a_copy_of_the_init_from_weights_for_its_reference(saved):
    """restore_start(keep_params=True): the weights it restored once are the state's and,
    in separate buffers, the reference's: the train step donates the state, and the
    reference must outlive that (deleting the state's buffers leaves the copy readable)."""
    import functools

    from flax.core import spmd as flax_spmd
    from test_train_step import optim_config

    from gptjax import sharding
    from gptjax.optim import make_optimizer
    from gptjax.steps import new_train_state
    from gptjax.train.resume import StartPoint, restore_start

    workdir, _ = saved
    mesh = sharding.make_mesh(dict(data=2, fsdp=2, tensor=2))
    tx, _ = make_optimizer(optim_config(), 10)
    create = functools.partial(new_train_state, MODEL, tx, 0)
    with jax.set_mesh(mesh), flax_spmd.logical_axis_rules(sharding.DEFAULT_RULES):
        target, shardings = sharding.plan_state(create, mesh, sharding.DEFAULT_RULES)
        start = StartPoint("init_from", 2, Path(workdir))
        args = (start, target, create, shardings, MODEL, print)
        state, kept = restore_start(*args, keep_params=True)
        _, none_kept = restore_start(*args)
    assert none_kept is None and int(state.step) == 0  # a new phase: fresh optimizer
    expected = Checkpointer(workdir, read_only=True).restore_params(2, target.params)
    for leaf in jax.tree.leaves(state.params):
        leaf.delete()
    for got, want in zip(jax.tree.leaves(kept), jax.tree.leaves(expected), strict=True):
        np.testing.assert_array_equal(np.asarray(got), np.asarray(want))
        assert got.sharding.spec == want.sharding.spec
