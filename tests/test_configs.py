"""Every shipped config loads, validates on 8 devices and builds (abstractly) to its stated size."""

from pathlib import Path

import jax
import numpy as np
import pytest
from flax import nnx

from gptjax.config import apply_overrides, load_config_file, model_config, validate
from gptjax.errors import ConfigError
from gptjax.model import Transformer, count_params
from gptjax.sharding import resolve_mesh_shape

CONFIG_DIR = Path(__file__).resolve().parent.parent / "configs"
CONFIG_FILES = sorted(CONFIG_DIR.glob("*.py"))
DEVICES = 8


def _config_for_8_devices(path: Path):
    """The config as shipped, its mesh replaced by all-fsdp only if the mesh needs other devices."""
    config = load_config_file(path)
    try:
        resolve_mesh_shape(config.mesh.to_dict(), DEVICES)
    except ConfigError:
        apply_overrides(config, ["mesh.data=1", "mesh.fsdp=-1", "mesh.tensor=1"])
    return config


def _abstract_param_count(cfg) -> int:
    abstract = nnx.eval_shape(lambda: Transformer(cfg, rngs=nnx.Rngs(0)))
    leaves = jax.tree.leaves(nnx.state(abstract, nnx.Param))
    assert leaves and all(isinstance(leaf, jax.ShapeDtypeStruct) for leaf in leaves)
    return sum(int(np.prod(leaf.shape)) for leaf in leaves)


def test_the_configs_are_found():
    names = {path.stem for path in CONFIG_FILES}
    assert {"tiny", "gpt2_124m", "llama_1b"} <= names


@pytest.mark.parametrize("path", CONFIG_FILES, ids=lambda p: p.stem)
def test_config_validates_and_builds_to_count_params(path):
    config = _config_for_8_devices(path)
    derived = validate(config, device_count=DEVICES)
    assert np.prod(list(derived["mesh_shape"].values())) == DEVICES
    cfg = model_config(config)
    assert cfg == derived["model"]
    assert _abstract_param_count(cfg) == count_params(cfg)


@pytest.mark.parametrize("path", CONFIG_FILES, ids=lambda p: p.stem)
def test_config_documents_its_command(path):
    """Configs are code: the docstring states the exact command that runs this file."""
    text = path.read_text()
    assert f"gptjax train --config configs/{path.name} --workdir " in text


def test_gpt2_124m_is_exactly_gpt2_small():
    config = load_config_file(CONFIG_DIR / "gpt2_124m.py")
    cfg = model_config(config)
    assert count_params(cfg) == 124_439_808
    assert _abstract_param_count(cfg) == 124_439_808
    assert (cfg.num_layers, cfg.num_heads, cfg.embed_dim, cfg.mlp_dim) == (12, 12, 768, 3072)
    assert cfg.tie_embeddings and cfg.position == "learned" and config.data.seq_len == 1024


def test_llama_1b_is_about_a_billion_and_llama_shaped():
    config = load_config_file(CONFIG_DIR / "llama_1b.py")
    cfg = model_config(config)
    assert 0.9e9 <= count_params(cfg) <= 1.6e9
    assert count_params(cfg) == 1_107_363_840  # the figure its docstring states
    assert (cfg.position, cfg.norm, cfg.activation) == ("rope", "rmsnorm", "swiglu")
    assert not cfg.tie_embeddings and not cfg.use_bias
    assert cfg.kv_heads < cfg.num_heads and cfg.rope_theta == 500_000.0
