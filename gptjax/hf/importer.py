"""`gptjax import-hf`: a Hugging Face GPT-2 / Llama directory -> a gptjax checkpoint at step 0.

Everything is checked before any weight is read (config, every tensor's presence and shape,
no tensor left unused, the tokenizer against the embedding), so an unsupported model stops
with one message and nothing is written. Weights are then streamed one tensor at a time from
memory-mapped safetensors into `jax.make_array_from_callback`: each device receives only its
shard of the target sharding, and the host holds at most one (stacked) tensor at a time.

The checkpoint has the usual items (params, metadata with the model architecture, tokenizer)
so `gptjax train --config.init_from=WORKDIR`, `gptjax sample` and `gptjax chat` read it as any
other; its optimizer state is empty, so it is a starting point, not a run to resume.
"""

from __future__ import annotations

import dataclasses
import json
import pickle

import jax
import jax.numpy as jnp
import numpy as np
from etils import epath
from flax import nnx
from flax.core import spmd as flax_spmd

from gptjax import sharding
from gptjax.chat_format import METADATA_KEY as CHAT_FORMAT_KEY
from gptjax.chat_format import JinjaChat
from gptjax.checkpoint import RUNTIME_FIELDS, Checkpointer, checkpoint_dir, package_versions
from gptjax.errors import ConfigError, DataError
from gptjax.hf.chat import declared_template, imported_phase
from gptjax.hf.config import model_config_from_hf, read_config
from gptjax.hf.layout import Layout, expand, gpt2_layout, llama_layout
from gptjax.hf.safetensors_io import SafetensorsFile
from gptjax.hf.tokenizer import read_hf_tokenizer
from gptjax.model import ModelConfig, Transformer
from gptjax.paths import PathLike, as_path, inside
from gptjax.steps import TrainState

# Every device holds 1/n of each parameter while importing (ZeRO-style): the import of a
# model larger than one device's memory works on a host whose devices hold it together.
IMPORT_MESH = {"data": 1, "fsdp": -1, "tensor": 1}
# A config whose model section has the family's shape, to finetune an import with.
_EXAMPLE_CONFIG = {"gpt2": "gpt2_124m.py", "llama": "llama_1b.py"}
_ZIP_MAGIC = b"PK\x03\x04"  # how every file torch.save writes (since torch 1.6) begins


class TensorStore:
    """The tensors of a model directory: sharded or single safetensors, or pytorch_model.bin."""

    def __init__(self, model_dir: epath.Path):
        self.where: dict[str, object] = {}  # name -> SafetensorsFile or torch state dict
        index, single = model_dir / "model.safetensors.index.json", model_dir / "model.safetensors"
        files = sorted(model_dir.glob("*.safetensors"))
        if index.is_file():
            names = set(_weight_map(index).values())
            files = sorted(inside(model_dir, name, str(index)) for name in names)
        elif single.is_file():  # other .safetensors beside it (adapters, ...) are not the model
            files = [single]
        if files:
            for path in files:
                if not path.is_file():
                    raise ConfigError(f"{path} is named by {index.name} but missing")
                reader = SafetensorsFile(path)
                twice = set(reader.entries) & set(self.where)
                if twice:
                    raise ConfigError(f"tensor {min(twice)} is stored twice ({path})")
                self.where |= dict.fromkeys(reader.entries, reader)
            return
        bins = sorted(model_dir.glob("pytorch_model*.bin"))
        if not bins:
            raise ConfigError(
                f"{model_dir} holds no weights: expected model.safetensors, sharded "
                "model-*.safetensors with model.safetensors.index.json, or pytorch_model.bin"
            )
        for path in bins:
            state = _torch_load(path)
            self.where |= dict.fromkeys(state, state)

    def names(self) -> set[str]:
        return set(self.where)

    def shape(self, name: str) -> tuple[int, ...]:
        source = self.where[name]
        if isinstance(source, SafetensorsFile):
            return source.shape(name)
        return tuple(source[name].shape)

    def read(self, name: str, rows: slice = slice(None)) -> np.ndarray:
        """float32 values (bfloat16/float16 upcast exactly), of `rows` of the first axis."""
        source = self.where[name]
        if isinstance(source, SafetensorsFile):
            return np.asarray(source.read(name)[rows], np.float32)
        return source[name][rows].float().numpy()

    def equal(self, a: str, b: str) -> bool:
        """Whether tensors `a` and `b` hold the same values (read a block of rows at a time,
        so two embedding-sized tensors are never in memory together)."""
        if self.shape(a) != self.shape(b):
            return False
        rows, block = self.shape(a)[0], 4096  # an embedding and a head: [V, D]
        for start in range(0, rows, block):
            part = slice(start, start + block)
            if not np.array_equal(self.read(a, part), self.read(b, part)):
                return False
        return True


def _weight_map(index: epath.Path) -> dict:
    """tensor name -> file name, as the index lists them (`inside` checks the file names)."""
    try:
        data = json.loads(index.read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise ConfigError(f"{index} is not a valid safetensors index: {error}") from None
    weight_map = data.get("weight_map") if isinstance(data, dict) else None
    if not isinstance(weight_map, dict):
        raise ConfigError(
            f"{index} is not a valid safetensors index: it needs a weight_map object of "
            "tensor name -> file name"
        )
    return weight_map


def _torch_load(path: epath.Path) -> dict:
    """The state dict of a pytorch_model.bin; DataError (exit 65) for anything else."""
    try:
        import torch
    except ImportError:
        raise ConfigError(
            f"{path} is a PyTorch checkpoint, which needs torch installed to read; install "
            "torch, or convert the model to safetensors"
        ) from None
    with path.open("rb") as f:
        magic = f.read(4)
    if magic != _ZIP_MAGIC:  # torch's own error would ask for the zip format to use mmap
        raise DataError(
            f"{path} is not a PyTorch checkpoint of torch.save's zip format (torch >= 1.6): "
            "the file is damaged, or in the legacy format; convert the model to safetensors"
        )
    try:
        # mmap: tensors stay on disk until read; weights_only: never run pickled code.
        state = torch.load(path, map_location="cpu", mmap=True, weights_only=True)
    except pickle.UnpicklingError:
        # torch's message advises weights_only=False, i.e. running the file's code: not here.
        raise DataError(
            f"{path} holds objects other than tensors, or its pickle is damaged; gptjax reads "
            "tensors only and never runs code from a checkpoint: convert the model to "
            "safetensors"
        ) from None
    except (RuntimeError, OSError, EOFError, ValueError, KeyError) as error:
        # The first sentence: torch goes on about how files get corrupted.
        reason = str(error).split(". ")[0].splitlines()[0]
        raise DataError(f"{path} is damaged or truncated ({reason})") from None
    tensors = isinstance(state, dict) and all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in state.items()
    )
    if not tensors:
        raise DataError(
            f"{path} holds a {type(state).__name__}, not a state dict of name -> tensor"
        )
    return state


def tie_as_transformers(
    store: TensorStore, family: str, cfg: ModelConfig, where: epath.Path, log
) -> ModelConfig:
    """`cfg` untied when config.json ties the head to the embedding but the weights hold a
    different lm_head.weight: transformers (5.x) then loads the two apart, and so does gptjax,
    with a note. An lm_head.weight equal to the embedding (older saves) stays tied."""
    head, embed = "lm_head.weight", layout_for(family, cfg, store.names()).to_gptjax["embed_VD"]
    if not cfg.tie_embeddings or head not in store.names() or store.equal(head, embed[0][0]):
        return cfg
    log(
        f"note: {where}/config.json sets tie_word_embeddings=true but {head} differs from "
        f"{embed[0][0]}: imported untied, as transformers loads it (tie_embeddings=False)"
    )
    return dataclasses.replace(cfg, tie_embeddings=False)


def layout_for(family: str, cfg: ModelConfig, names: set[str]) -> Layout:
    if family == "llama":
        return llama_layout(cfg)
    # GPT2LMHeadModel saves "transformer.wte.weight"; the hub's gpt2 (a GPT2Model) "wte.weight".
    return gpt2_layout(cfg, "" if "wte.weight" in names else "transformer.")


def check_tensors(
    store: TensorStore, layout: Layout, hf_cfg: ModelConfig, where: epath.Path
) -> None:
    """Every tensor the model needs is present with its shape, and no weight is left over."""
    names, N = store.names(), hf_cfg.num_layers
    for template, shape in layout.hf_shapes.items():
        for name in expand(template, N):
            if name not in names:
                raise ConfigError(
                    f"{where}: tensor {name} is missing ({layout.family} with {N} layers needs "
                    f"it); the weights are incomplete or belong to another architecture"
                )
            if store.shape(name) != shape:
                raise ConfigError(
                    f"{where}: tensor {name} has shape {store.shape(name)}, but config.json "
                    f"implies {shape}"
                )
    known = set(layout.names(N)) | {n for t in layout.ignored for n in expand(t, N)}
    extra = sorted(names - known)
    if extra:
        raise ConfigError(
            f"{where}: {len(extra)} tensors have no place in a {layout.family} model (first: "
            f"{extra[0]}); gptjax does not implement what they compute"
        )


def _grow_rows(array_VX: np.ndarray, rows: int) -> np.ndarray:
    """Appends rows equal to the mean row: new tokens start as an average known token."""
    mean = array_VX.mean(0, keepdims=True, dtype=np.float64).astype(array_VX.dtype)
    return np.concatenate([array_VX, np.repeat(mean, rows - len(array_VX), axis=0)])


def _leaf_values(store: TensorStore, layout: Layout, path: str, vocab: int):
    """layer index (None for unstacked leaves) -> the leaf's float32 values in gptjax layout."""
    templates, convert = layout.to_gptjax[path]

    def values(layer: int | None) -> np.ndarray:
        arrays = [store.read(t.format(i=layer)) for t in templates]
        value = np.asarray(convert(*arrays), np.float32)
        if path == "embed_VD" and len(value) < vocab:
            value = _grow_rows(value, vocab)
        if path == "head_DV" and value.shape[1] < vocab:
            value = _grow_rows(value.T, vocab).T
        return value

    return values


def _stream_leaf(values, target: jax.ShapeDtypeStruct, stacked: bool) -> jax.Array:
    """The leaf placed with `target.sharding`: each device gets only its slice."""
    shards: dict = {}  # replicated devices ask for the same slice: compute it once

    def callback(index: tuple[slice, ...]) -> np.ndarray:
        key = tuple((s.start, s.stop, s.step) for s in index)
        if key not in shards:
            if stacked:
                layers = range(target.shape[0])[index[0]]
                shards[key] = np.stack([values(i)[index[1:]] for i in layers])
            else:
                shards[key] = np.ascontiguousarray(values(None)[index])
        return shards[key]

    return jax.make_array_from_callback(target.shape, target.sharding, callback)


def _path_name(path) -> str:
    keys = [getattr(k, "key", getattr(k, "name", None)) for k in path]
    return "/".join(str(k) for k in keys if k != "value")


@dataclasses.dataclass(frozen=True)
class ImportResult:
    workdir: epath.Path
    family: str
    model_config: ModelConfig
    tokenizer_vocab: int
    parameters: int
    phase: str = "pretrain"  # "sft" for a model that ships a chat template gptjax renders
    own_template: bool = False  # it chats in its own template, not gptjax's

    def describe(self) -> list[str]:
        """What was written and the commands that use it (the model overrides included)."""
        cfg, config = self.model_config, f"configs/{_EXAMPLE_CONFIG[self.family]}"
        chat = self.phase != "pretrain"
        template = "its own" if self.own_template else "gptjax's"
        fields = dataclasses.asdict(cfg).items()
        overrides = " ".join(
            f"--config.model.{key}={value}"
            for key, value in fields
            if key not in RUNTIME_FIELDS and value is not None
        )
        return [
            f"imported a {self.family} model: {self.parameters:,} parameters, "
            f"{cfg.vocab_size} embedding rows, {self.tokenizer_vocab} tokenizer tokens, into "
            f"{checkpoint_dir(self.workdir)}/0",
            f"sample:   gptjax sample {self.workdir} --prompt 'Hello'"
            + (f"  (answers as a chat model, in {template} chat template)" if chat else ""),
            f"finetune: gptjax train --config {config} --workdir NEW_WORKDIR "
            f"--config.init_from={self.workdir} {overrides} "
            # Validation compares it with the model's rows; the tokenizer itself comes from
            # the checkpoint.
            f"--config.data.vocab_size={self.tokenizer_vocab}"
            # README "Finetuning a model that has its own template".
            + ("  (SFT teaches gptjax's chat template, not its own)" if self.own_template else ""),
        ]


def _check_vocab(tokenizer, hf_vocab: int, vocab_size: int | None, where: epath.Path) -> int:
    """The model's vocab_size: the Hugging Face one, or `vocab_size` rows when asked to grow."""
    if vocab_size is not None and vocab_size < hf_vocab:
        raise ConfigError(
            f"--vocab-size {vocab_size} is smaller than the model's {hf_vocab} embedding rows; "
            "gptjax never drops rows"
        )
    rows = vocab_size or hf_vocab
    if tokenizer.vocab_size > rows:
        need = -(-tokenizer.vocab_size // 128) * 128
        raise ConfigError(
            f"{where}: the tokenizer has {tokenizer.vocab_size} tokens (with any chat tokens "
            f"added) but the model's embedding has {rows} rows; pass --vocab-size {need} (or "
            f"any value >= {tokenizer.vocab_size}) to append rows, initialised to the mean "
            "embedding"
        )
    return rows


def import_hf(
    model_dir: PathLike,
    workdir: PathLike,
    *,
    add_chat_tokens: bool = False,
    vocab_size: int | None = None,
    mesh: dict | None = None,
    log=print,
) -> ImportResult:
    """Writes WORKDIR/checkpoints/0 (and WORKDIR/tokenizer) from a Hugging Face model."""
    model_dir, workdir = as_path(model_dir, "model directory"), as_path(workdir, "--workdir")
    if checkpoint_dir(workdir).is_dir() and any(checkpoint_dir(workdir).iterdir()):
        raise ConfigError(f"{checkpoint_dir(workdir)} already exists; import into a new workdir")
    hf = read_config(model_dir)
    family, hf_cfg = model_config_from_hf(hf, str(model_dir / "config.json"))
    store = TensorStore(model_dir)
    hf_cfg = tie_as_transformers(store, family, hf_cfg, model_dir, log)
    layout = layout_for(family, hf_cfg, store.names())
    check_tensors(store, layout, hf_cfg, model_dir)
    tokenizer = read_hf_tokenizer(model_dir, hf, add_chat_tokens=add_chat_tokens)
    rows = _check_vocab(tokenizer, hf_cfg.vocab_size, vocab_size, model_dir)
    cfg = dataclasses.replace(hf_cfg, vocab_size=rows)

    device_mesh = sharding.make_mesh(mesh or IMPORT_MESH)
    rules = sharding.DEFAULT_RULES
    create = lambda: nnx.state(Transformer(cfg, rngs=nnx.Rngs(0)))
    with jax.set_mesh(device_mesh), flax_spmd.logical_axis_rules(rules):
        target, _ = sharding.plan_state(create, device_mesh, rules)
    leaves, treedef = jax.tree_util.tree_flatten_with_path(target)
    arrays = []
    for path, leaf in leaves:
        name = _path_name(path)
        log(f"  {name} {tuple(leaf.shape)}")
        values = _leaf_values(store, layout, name, rows)
        arrays.append(_stream_leaf(values, leaf, name.startswith("blocks/")))
    params = jax.tree.unflatten(treedef, arrays)
    source = {
        "path": str(model_dir.resolve()),
        "model_type": hf.get("model_type"),
        "architectures": hf.get("architectures"),
        "transformers_version": hf.get("transformers_version"),
    }
    template = declared_template(tokenizer.bundle["files"])
    phase, chat_format = imported_phase(template, tokenizer, model_dir, hf, log)
    source["chat_template"] = template
    write_params_checkpoint(
        workdir,
        cfg,
        params,
        tokenizer,
        device_mesh,
        rules,
        source=source,
        phase=phase,
        chat_format=chat_format,
    )
    tokenizer.save(workdir / "tokenizer")
    parameters = sum(int(np.prod(leaf.shape)) for _, leaf in leaves)
    own = chat_format is not None
    return ImportResult(workdir, family, cfg, tokenizer.vocab_size, parameters, phase, own)


def write_params_checkpoint(
    workdir,
    cfg: ModelConfig,
    params,
    tokenizer,
    mesh,
    rules,
    *,
    source: dict | None = None,
    phase: str = "pretrain",
    chat_format: JinjaChat | None = None,
) -> None:
    """WORKDIR/checkpoints/0 holding `params` (placed on `mesh`), as `init_from` reads it.

    `phase` is what `sample` and `chat` read: "sft" makes them apply the chat template, the
    model's own `chat_format` when given (gptjax.chat_format), else gptjax's.

    No optimizer state: `init_from` reads parameters only and starts a fresh optimizer.
    """
    replicated = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())
    zero = jax.device_put(jnp.zeros((), jnp.int32), replicated)
    state = TrainState(step=zero, params=params, opt_state={}, bad_steps=zero, skipped_steps=zero)
    metadata = {
        "phase": phase,
        "config": {"sharding_rules": [list(rule) for rule in rules]},
        "model": dataclasses.asdict(cfg),
        "mesh": {axis: int(size) for axis, size in mesh.shape.items()},
        "process_count": jax.process_count(),
        "versions": package_versions(),
        "tokenizer_sha256": tokenizer.sha256,
        "data_sha256": None,
        "imported_from": source,
    }
    if chat_format is not None:
        metadata[CHAT_FORMAT_KEY] = chat_format.record()
    with Checkpointer(workdir, async_save=False) as checkpointer:
        checkpointer.save(state, metadata, tokenizer.model_bytes, force=True)
