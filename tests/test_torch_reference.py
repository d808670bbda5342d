"""The PyTorch speed references: the nanoGPT-style GPT is gptjax's GPT-2, weight for weight."""

import math
import sys
from pathlib import Path

import jax.numpy as jnp
import numpy as np
import pytest
import torch
from flax import nnx

from gptjax.model import ModelConfig, Transformer, count_params

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tools"))
import torch_gpt  # noqa: E402
import torch_reference  # noqa: E402

SHAPE = dict(vocab_size=256, num_layers=2, num_heads=4, embed_dim=64, mlp_dim=256, max_seq_len=32)


def _tokens(seed: int = 0, shape=(2, 32)) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, SHAPE["vocab_size"], shape, dtype=np.int64)


@pytest.mark.parametrize("name", torch_reference.REFERENCES)
def test_both_references_have_gptjaxs_parameter_count(name):
    cfg = ModelConfig.gpt2(**SHAPE)
    model = torch_reference.build_model(name, cfg)
    # Tied head: the embedding counts once (parameters() yields a shared tensor once).
    assert sum(p.numel() for p in model.parameters()) == count_params(cfg)


def test_loss_at_init_is_that_of_a_uniform_guess():
    cfg = ModelConfig.gpt2(**{**SHAPE, "vocab_size": 4096})
    torch.manual_seed(0)
    model = torch_gpt.GPT(cfg)
    tokens = torch.from_numpy(_tokens(shape=(4, 32)) % 4096)
    with torch.no_grad():
        logits = model(tokens[:, :-1])
        loss = torch.nn.functional.cross_entropy(
            logits.reshape(-1, 4096), tokens[:, 1:].reshape(-1)
        )
    assert abs(loss.item() - math.log(4096)) < 0.05


def test_with_gptjaxs_weights_it_computes_gptjaxs_logits():
    cfg = ModelConfig.gpt2(**SHAPE)
    jax_model = Transformer(cfg, rngs=nnx.Rngs(3))
    # Every tensor redrawn (biases and norms non-zero, weights large enough that activations
    # reach the range where GELU's tanh form differs from the exact one), so a swapped,
    # untransposed or differently computed piece cannot hide under the tolerance.
    state = nnx.state(jax_model, nnx.Param)
    rng = np.random.default_rng(1)
    for _, leaf in nnx.to_flat_state(state):
        shape = leaf.get_value().shape
        leaf.set_value(jnp.asarray(rng.normal(0, 0.3, shape), jnp.float32))
    nnx.update(jax_model, state)
    model = torch_gpt.GPT(cfg)
    torch_gpt.load_gptjax_params(model, cfg, nnx.state(jax_model, nnx.Param))
    tokens = _tokens()
    expected = np.asarray(jax_model(jnp.asarray(tokens, jnp.int32)))
    with torch.no_grad():
        got = model(torch.from_numpy(tokens)).numpy()
    np.testing.assert_allclose(got, expected, atol=1e-4, rtol=1e-4)


def test_the_optimizer_decays_weight_matrices_only():
    cfg = ModelConfig.gpt2(**SHAPE)
    model = torch_gpt.GPT(cfg)

    class Optim:
        peak_lr, b1, b2, eps, weight_decay = 1e-3, 0.9, 0.95, 1e-8, 0.1

    decayed, plain = torch_gpt.adamw(model, Optim).param_groups
    assert decayed["weight_decay"] == 0.1 and plain["weight_decay"] == 0.0
    assert all(p.dim() == 2 for p in decayed["params"])
    assert all(p.dim() == 1 for p in plain["params"])
    assert len(decayed["params"]) == 2 + 4 * cfg.num_layers  # wte, wpe, 4 projections a layer


def test_a_llama_shape_is_refused():
    with pytest.raises(ValueError, match="model.position must be 'learned'"):
        torch_gpt.check_gpt2_family(ModelConfig.llama(**SHAPE))
