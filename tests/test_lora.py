"""LoRA (gptjax.lora): exactly the base at init, only adapters trained and stored, merged
weights equal to the adapted model, and bad settings refused before anything runs."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from flax.core import spmd as flax_spmd
from jax.sharding import PartitionSpec as P
from test_train_step import make_batch, optim_config

from gptjax import lora as lora_lib
from gptjax import sharding
from gptjax.config import load_config_file, validate
from gptjax.errors import ConfigError
from gptjax.model import ModelConfig, Transformer
from gptjax.optim import make_optimizer
from gptjax.steps import (
    base_params,
    jit_train_step,
    make_train_step,
    model_graphdef,
    new_train_state,
)

MODEL = ModelConfig.llama(
    vocab_size=128,
    num_layers=2,
    num_heads=4,
    num_kv_heads=2,
    embed_dim=32,
    mlp_dim=64,
    max_seq_len=32,
)
LORA = lora_lib.LoraConfig(rank=4, alpha=8.0, targets=lora_lib.parse_targets("all", True))


def _split(seed=0, lora=LORA):
    model = Transformer(MODEL, rngs=nnx.Rngs(seed), lora=lora)
    graphdef, adapters, base = nnx.split(model, lora_lib.LoraParam, nnx.Param)
    return graphdef, adapters, base


def _logits(graphdef, params, tokens):
    return np.asarray(nnx.merge(graphdef, params)(tokens))


TOKENS = jnp.asarray(np.random.default_rng(0).integers(0, 128, (2, 16)))


def test_adapted_model_is_exactly_the_base_at_init():
    graphdef, adapters, base = _split()
    plain_graphdef, _ = nnx.split(Transformer(MODEL, rngs=nnx.Rngs(1)))
    adapted = _logits(graphdef, lora_lib.join(adapters, base), TOKENS)
    np.testing.assert_array_equal(adapted, _logits(plain_graphdef, base, TOKENS))
    # A is drawn (peft's kaiming-uniform bound 1/sqrt(d_in)), B is zero.
    a = np.asarray(adapters["blocks"]["attn"]["q_lora_a"][...])
    assert a.std() > 0 and np.abs(a).max() <= 1 / np.sqrt(MODEL.embed_dim)
    assert not np.any(np.asarray(adapters["blocks"]["mlp"]["down_lora_b"][...]))


def test_adapter_count_and_shapes_follow_the_targets():
    _, adapters, _ = _split()
    assert sum(x.size for x in jax.tree.leaves(adapters)) == lora_lib.count(LORA, MODEL)
    only_qv = lora_lib.LoraConfig(4, 8.0, ("q", "v"))
    _, adapters, _ = _split(lora=only_qv)
    names = {name for module in adapters["blocks"].values() for name in module}
    assert names == {"q_lora_a", "q_lora_b", "v_lora_a", "v_lora_b"}
    assert adapters["blocks"]["attn"]["q_lora_b"][...].shape == (2, 4, 4, 8)  # N, r, H, K


def test_merged_weights_compute_the_adapted_model():
    graphdef, adapters, base = _split()
    moved = jax.tree.map(
        lambda x: x + 0.05 * jax.random.normal(jax.random.key(1), x.shape), adapters
    )
    adapted = _logits(graphdef, lora_lib.join(moved, base), TOKENS)
    plain_graphdef, _ = nnx.split(Transformer(MODEL, rngs=nnx.Rngs(1)))
    merged = _logits(plain_graphdef, lora_lib.merge_into_base(base, moved, LORA), TOKENS)
    assert np.abs(adapted - _logits(plain_graphdef, base, TOKENS)).max() > 0.01
    np.testing.assert_allclose(merged, adapted, atol=2e-5)


def test_adapters_are_sharded_like_the_matrices_they_adapt():
    mesh = sharding.make_mesh({"data": 2, "fsdp": 2, "tensor": 2})
    rules = sharding.DEFAULT_RULES

    def create():
        return lora_lib.split_adapters(nnx.state(Transformer(MODEL, rngs=nnx.Rngs(0), lora=LORA)))[
            0
        ]

    with jax.set_mesh(mesh), flax_spmd.logical_axis_rules(rules):
        _, shardings = sharding.plan_state(create, mesh, rules)
    attn = shardings["blocks"]["attn"]
    # q: [N, D, r] over embed (fsdp); [N, r, H, K] over heads (tensor); o's A over heads.
    assert attn["q_lora_a"].spec == P(None, "fsdp", None)
    assert attn["q_lora_b"].spec == P(None, None, "tensor", None)
    assert attn["o_lora_a"].spec == P(None, "tensor", None, None)
    assert shardings["blocks"]["mlp"]["down_lora_a"].spec == P(None, "tensor", None)


def _lora_step(steps=10):
    mesh = sharding.make_mesh({"data": 2, "fsdp": 2, "tensor": 2})
    rules = sharding.DEFAULT_RULES
    tx, schedule = make_optimizer(optim_config(warmup_steps=0, peak_lr=1e-2), steps)
    create = functools.partial(new_train_state, MODEL, tx, 0, LORA)
    with jax.set_mesh(mesh), flax_spmd.logical_axis_rules(rules):
        state, shardings = sharding.sharded_init(create, mesh, rules)
        base, base_shardings = sharding.sharded_init(lambda: base_params(MODEL), mesh, rules)
    step = make_train_step(
        model_graphdef(MODEL, LORA),
        tx,
        schedule,
        seed=0,
        grad_accum_steps=1,
        use_dropout=False,
        frozen_base=True,
    )
    return jit_train_step(step, shardings, mesh, (base_shardings,)), state, base, mesh


def test_a_step_trains_only_adapters_and_the_optimizer_holds_only_their_shapes():
    step, state, base, mesh = _lora_step()
    base_before = jax.tree.map(np.asarray, base)
    adapters_before = jax.tree.map(np.asarray, state.params)
    adapter_shapes = sorted(x.shape for x in jax.tree.leaves(state.params))
    moment_shapes = sorted(x.shape for x in jax.tree.leaves(state.opt_state) if x.ndim)
    assert moment_shapes == sorted(adapter_shapes * 2)  # Adam's mu and nu, nothing else
    with jax.set_mesh(mesh), flax_spmd.logical_axis_rules(sharding.DEFAULT_RULES):
        batch = sharding.global_batch_from_local(make_batch(), mesh)
        losses = []
        for _ in range(3):
            state, metrics = step(state, batch, base)
            losses.append(float(metrics["loss"]))
    assert losses[-1] < losses[0]
    for before, after in zip(jax.tree.leaves(base_before), jax.tree.leaves(base), strict=True):
        np.testing.assert_array_equal(before, np.asarray(after))  # bitwise frozen
    b_before = adapters_before["blocks"]["attn"]["q_lora_b"]
    assert not np.any(b_before) and np.any(np.asarray(state.params["blocks"]["attn"]["q_lora_b"]))


def _config(**lora):
    config = load_config_file("configs/tiny_sft.py")
    config.init_from = "runs/some-sft-base"
    for name, value in lora.items():
        setattr(config.finetune, name, value)
    return config


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"lora_rank": -1}, "finetune.lora_rank must be >= 1 (0 = LoRA off), got -1"),
        ({"lora_rank": 4, "lora_targets": "q,qkv"}, "'qkv' is not a projection"),
        ({"lora_rank": 4, "lora_targets": "all,q"}, '"all" stands alone'),
        ({"lora_rank": 4, "lora_targets": "q,gate"}, "this model's MLP has no gate"),
        ({"lora_rank": 4, "lora_alpha": 0.0}, "finetune.lora_alpha must be positive"),
        ({"lora_rank": 4, "lora_targets": "q,q"}, "names a projection twice"),
    ],
)
def test_bad_lora_settings_are_config_errors(fields, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        validate(_config(**fields), device_count=8)
    assert ConfigError.exit_code == 2


def test_lora_needs_a_base_to_adapt():
    config = _config(lora_rank=4)
    config.init_from = ""
    with pytest.raises(ConfigError, match="trains adapters on a frozen base: set init_from"):
        validate(config, device_count=8)
    assert validate(_config(lora_rank=4), device_count=8)["lora"].targets == (
        "q", "k", "v", "o", "up", "down"
    )  # fmt: skip  # "all" on tiny's GELU MLP: no gate


def test_the_cli_refuses_a_bad_lora_setting_with_one_line_and_exit_2(tmp_path):
    import subprocess
    import sys

    result = subprocess.run(
        [sys.executable, "-m", "gptjax.cli", "train", "--config", "configs/tiny_sft.py",
         "--workdir", str(tmp_path / "run"), "--config.finetune.lora_rank=-2"],
        capture_output=True, text=True,
    )  # fmt: skip
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "gptjax: error: finetune.lora_rank must be >= 1 (0 = LoRA off), got -2"
    ]
    assert not (tmp_path / "run").exists()
