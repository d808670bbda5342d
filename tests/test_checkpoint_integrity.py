"""Every item of a checkpoint is verified on every load path; damage is named as damage.

One small checkpointed workdir (steps 1 and 2) is written in-process once; each case copies
it, damages step 2 in one way and loads it the way a command does: `train` (the full
restore), `sample`/`chat`/`eval`/`export-hf` (all through `load_model`), `checkpoints --tree`,
the `checkpoints` listing and `checkpoints --verify`. tests/test_checkpoint_recovery.py runs
the commands themselves.
"""

import dataclasses
import hashlib
import json
import shutil
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from test_train_step import MODEL, setup

from gptjax import sharding
from gptjax.checkpoint import Checkpointer
from gptjax.errors import CheckpointError

MESH = dict(data=8)
FIXTURE_TOKENIZER = Path(__file__).parent / "fixtures" / "checkpoint_v0_1"


@pytest.fixture(scope="module")
def target():
    """The initial state of MODEL on MESH: saved as steps 1 and 2, and the restore target."""
    return setup(MESH)[1]


@pytest.fixture(scope="module")
def saved(tmp_path_factory, target) -> Path:
    """A workdir with verifiable checkpoints 1 and 2 (metadata as a run writes it)."""
    workdir = tmp_path_factory.mktemp("integrity")
    with Checkpointer(FIXTURE_TOKENIZER, read_only=True) as old:
        tokenizer = old.tokenizer_bytes(2)
    metadata = {
        "phase": "pretrain",
        "model": dataclasses.asdict(MODEL),
        "mesh": MESH,
        "config": {"sharding_rules": [list(rule) for rule in sharding.DEFAULT_RULES]},
        "tokenizer_sha256": hashlib.sha256(tokenizer).hexdigest(),
    }
    with Checkpointer(workdir, keep_last=3) as checkpointer:
        for step in (1, 2):  # no training: what is verified is the bytes, not their history
            state = _random_floats(target, seed=step)
            state = state.replace(step=jax.device_put(jnp.int32(step), target.step.sharding))
            checkpointer.save(state, metadata, tokenizer)
    return workdir


def _random_floats(tree, seed: int):
    """`tree` with random float leaves, placed alike: the initial zeros and ones compress to a
    few bytes, and a flipped byte in the largest file then often lands outside any value."""
    rng = np.random.default_rng(seed)

    def fill(x):
        if not jnp.issubdtype(x.dtype, jnp.floating):
            return x
        return jax.device_put(rng.standard_normal(x.shape).astype(x.dtype), x.sharding)

    return jax.tree.map(fill, tree)


def _largest_data_file(item_dir: Path) -> Path:
    files = [f for f in item_dir.rglob("*") if f.is_file() and f.parent.name == "d"]
    return max(files, key=lambda f: f.stat().st_size)


def _flip_middle_byte(path: Path) -> None:
    raw = bytearray(path.read_bytes())
    raw[len(raw) // 2] ^= 0x01
    path.write_bytes(bytes(raw))


def _flip_a_byte_per_value_file(item_dir: Path) -> None:
    """The middle byte of each OCDBT data file over 4 KB (beside small index nodes) of the
    item. One file alone is not enough: where the values lie (the process's files or the
    merged root's) varies from save to save, and a file's middle byte may lie outside them."""
    for path in item_dir.rglob("*"):
        if path.is_file() and path.parent.name == "d" and path.stat().st_size > 4096:
            _flip_middle_byte(path)


def _edit_json(path: Path, edit) -> None:
    path.write_text(json.dumps(edit(json.loads(path.read_text()))))


def _one_base64_character(item: dict) -> dict:
    text = item["model_b64"]
    middle = len(text) // 2
    return item | {
        "model_b64": text[:middle] + ("A" if text[middle] != "A" else "B") + text[middle + 1 :]
    }


# damage name -> (how, the item the message must name)
DAMAGE = {
    "params byte": (lambda s: _flip_a_byte_per_value_file(s / "params"), "params"),
    "trainer byte": (lambda s: _flip_a_byte_per_value_file(s / "trainer"), "trainer"),
    "tokenizer base64 character": (
        lambda s: _edit_json(s / "tokenizer" / "metadata", _one_base64_character),
        "tokenizer",
    ),
    "metadata norm_eps": (
        lambda s: _edit_json(
            s / "metadata" / "metadata",
            lambda m: m | {"model": m["model"] | {"norm_eps": 0.1}},
        ),
        "metadata",
    ),
    "metadata digest in the commit record": (
        lambda s: _edit_json(s / "_CHECKPOINT_METADATA", lambda r: r | {"custom_metadata": {}}),
        "metadata digest",
    ),
    "params manifest deleted": (lambda s: (s / "params" / "manifest.ocdbt").unlink(), "params"),
    "params _METADATA corrupt": (
        lambda s: (s / "params" / "_METADATA").write_text(
            (s / "params" / "_METADATA").read_text()[:-40]
        ),
        "params",
    ),
    "tokenizer item missing": (lambda s: shutil.rmtree(s / "tokenizer"), "tokenizer"),
    "trainer item missing": (lambda s: shutil.rmtree(s / "trainer"), "trainer"),
    "params data truncated": (
        lambda s: (f := _largest_data_file(s / "params")).write_bytes(f.read_bytes()[:100]),
        "params",
    ),
    "params data deleted": (lambda s: _largest_data_file(s / "params").unlink(), "params"),
}


def _train(workdir, target):
    with Checkpointer(workdir, read_only=True) as checkpointer:
        checkpointer.restore(2, target)


def _load_model(workdir, target):
    from gptjax.inference.load import load_model

    load_model(workdir)


def _tree(workdir, target):
    from gptjax.cli.runs import checkpoint_tree

    checkpoint_tree(workdir, None)


def _listing(workdir, target):
    from gptjax.cli.runs import list_checkpoints

    list_checkpoints(workdir)


def _verify(workdir, target):
    from gptjax.cli.runs import verify_checkpoints

    list(verify_checkpoints(workdir, None))


LOADERS = {
    "train": _train,
    "sample/chat/eval/export-hf": _load_model,
    "tree": _tree,
    "list": _listing,
    "verify": _verify,  # `checkpoints --verify`: every array read, so every damage is caught
}
RECOVERY = {
    "train": "--config.checkpoint.resume_step=1",
    "sample/chat/eval/export-hf": "--step 1",
    "tree": "--step 1",
    "list": "--step 1",
    "verify": "--step 1",
}
# What a path does not read cannot be checked byte by byte: sample & co. read no optimizer
# state, and the listing and --tree read no array data (their indexes are still checked, and
# catch a flipped byte when it lands in an index node). Everywhere else damage must raise.
NOT_READ = {
    ("trainer byte", "sample/chat/eval/export-hf"),
    *((damage, loader) for loader in ("tree", "list") for damage in DAMAGE if "byte" in damage),
    *(
        (damage, loader)
        for loader in ("tree", "list")
        for damage in ("params data truncated", "params data deleted")
    ),
}


@pytest.mark.parametrize("loader", list(LOADERS))
@pytest.mark.parametrize("damage", list(DAMAGE))
def test_damage_to_any_item_is_refused_naming_it_and_the_earlier_step(
    saved, target, tmp_path, damage, loader
):
    workdir = tmp_path / "run"
    shutil.copytree(saved, workdir)
    how, item = DAMAGE[damage]
    how(workdir / "checkpoints" / "2")
    try:
        LOADERS[loader](workdir, target)
    except CheckpointError as error:
        message = str(error)
    else:
        assert (damage, loader) in NOT_READ, "damage loaded silently"
        return
    assert "\n" not in message and "tensorstore" not in message.lower()
    assert "checkpoint 2" in message and "damaged" in message and item in message, message
    assert "does not match this model" not in message
    assert f"earlier checkpoint 1 with {RECOVERY[loader]}" in message, message
