"""`gptjax export-hf`: a gptjax checkpoint -> a Hugging Face model directory.

Writes config.json, generation_config.json, the weights as safetensors (one file, or shards
of at most `max_shard_bytes` with model.safetensors.index.json, as `save_pretrained` does) and
the tokenizer (with gptjax's chat template for a chat checkpoint: gptjax/hf/chat.py), so
`transformers.AutoModelForCausalLM.from_pretrained(DIR)` loads it with no missing or
unexpected weights. Tensors are gathered one layer at a time; the host holds at
most one output shard. Run it on one host (a pod slice's checkpoint restores onto any mesh).
"""

from __future__ import annotations

import dataclasses
import json

import jax
import ml_dtypes
import numpy as np
from etils import epath

from gptjax.chat_format import JinjaChat
from gptjax.errors import ConfigError
from gptjax.hf.chat import with_chat_files
from gptjax.hf.config import family_of, hf_config
from gptjax.hf.layout import Layout, expand, gpt2_layout, llama_layout
from gptjax.hf.safetensors_io import write_safetensors
from gptjax.hf.tokenizer import hf_tokenizer_files
from gptjax.inference.load import load_model
from gptjax.paths import PathLike, as_path

DTYPES = {"float32": np.dtype(np.float32), "bfloat16": np.dtype(ml_dtypes.bfloat16)}
# Parameters split over every device while exporting: no device holds a whole model.
EXPORT_MESH = {"data": 1, "fsdp": -1, "tensor": 1}
DEFAULT_SHARD_BYTES = 5 * 2**30  # transformers' own default shard size (5 GB)


@dataclasses.dataclass(frozen=True)
class ExportResult:
    out: epath.Path
    family: str
    files: list[str]
    tensors: int


def _leaf_map(params) -> dict[str, jax.Array]:
    flat = jax.tree_util.tree_leaves_with_path(params)
    names = {}
    for path, leaf in flat:
        keys = [getattr(k, "key", getattr(k, "name", None)) for k in path]
        names["/".join(str(k) for k in keys if k != "value")] = leaf
    return names


def _plan_shards(layout: Layout, num_layers: int, itemsize: int, limit: int) -> list[list[str]]:
    """Tensor names grouped into files of at most `limit` bytes (a larger tensor alone)."""
    shards: list[list[str]] = [[]]
    size = 0
    for template, shape in layout.hf_shapes.items():
        nbytes = int(np.prod(shape)) * itemsize
        for name in expand(template, num_layers):
            if shards[-1] and size + nbytes > limit:
                shards.append([])
                size = 0
            shards[-1].append(name)
            size += nbytes
    return shards


def _tensor(layout: Layout, leaves: dict, name: str, templates: dict, dtype) -> np.ndarray:
    template = templates[name]
    paths, convert = layout.to_hf[template]
    layer = None
    if "{i}" in template:  # find the layer number the name was expanded with
        prefix, _, suffix = template.partition("{i}")
        layer = int(name[len(prefix) : len(name) - len(suffix)])
    arrays = [np.asarray(leaves[p][layer] if layer is not None else leaves[p]) for p in paths]
    return np.ascontiguousarray(convert(*arrays)).astype(dtype, copy=False)


def _check_out(out: epath.Path) -> None:
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise ConfigError(f"--out {out} exists and is not an empty directory; choose a new one")
    out.mkdir(parents=True, exist_ok=True)


def export_hf(
    workdir: PathLike,
    out: PathLike,
    *,
    step: int | None = None,
    dtype: str = "float32",
    max_shard_bytes: int = DEFAULT_SHARD_BYTES,
    log=print,
) -> ExportResult:
    """Writes the checkpoint `step` (default: the latest) of `workdir` as a Hugging Face model."""
    if dtype not in DTYPES:
        raise ConfigError(f"--dtype {dtype!r} must be one of {tuple(DTYPES)}")
    if jax.process_count() > 1:
        raise ConfigError("export-hf runs on one host; the checkpoint restores onto any mesh")
    loaded = load_model(workdir, step=step, mesh=EXPORT_MESH)
    cfg = loaded.model_config
    family = family_of(cfg)
    out = as_path(out, "export directory")
    _check_out(out)
    layout = gpt2_layout(cfg) if family == "gpt2" else llama_layout(cfg)
    leaves = _leaf_map(loaded.params)
    templates = {n: t for t in layout.hf_shapes for n in expand(t, cfg.num_layers)}
    shards = _plan_shards(layout, cfg.num_layers, DTYPES[dtype].itemsize, max_shard_bytes)
    files = (
        ["model.safetensors"]
        if len(shards) == 1
        else [f"model-{i + 1:05d}-of-{len(shards):05d}.safetensors" for i in range(len(shards))]
    )
    weight_map, total = {}, 0
    for file, names in zip(files, shards, strict=True):
        log(f"  {file}: {len(names)} tensors")
        tensors = [(n, _tensor(layout, leaves, n, templates, DTYPES[dtype])) for n in names]
        total += write_safetensors(out / file, tensors, {"format": "pt"})
        weight_map |= dict.fromkeys(names, file)
    if len(files) > 1:
        index = {"metadata": {"total_size": total}, "weight_map": weight_map}
        (out / "model.safetensors.index.json").write_text(json.dumps(index, indent=2))
    tok = loaded.tokenizer
    special = {"bos": tok.bos_id, "eos": tok.eos_id}
    config = hf_config(cfg, family, special, dtype)
    if tok.pad_id not in (tok.bos_id, tok.eos_id):
        config["pad_token_id"] = tok.pad_id
    (out / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    written = [*files, "config.json"]
    form = loaded.chat_format
    own = form.stop_ids(tok) if loaded.is_chat and isinstance(form, JinjaChat) else None
    files = hf_tokenizer_files(tok, cfg.max_seq_len)
    extra = with_chat_files(files, tok, chat=loaded.is_chat, stop_ids=own)
    for name, data in extra.items():
        (out / name).write_bytes(data)
        written.append(name)
    return ExportResult(out, family, written, len(weight_map))
