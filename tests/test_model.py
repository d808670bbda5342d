"""The decoder: shapes, causality, packing, scan/remat equivalence, GQA, parameter counts."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from gptjax import ModelConfig, Transformer
from gptjax.model import count_params, grouped_attention, rotary

SMALL = dict(vocab_size=64, num_layers=2, num_heads=4, embed_dim=32, mlp_dim=64, max_seq_len=16)


def gpt2(**overrides):
    return ModelConfig.gpt2(**(SMALL | overrides))


def llama(**overrides):
    return ModelConfig.llama(**(SMALL | dict(num_kv_heads=2) | overrides))


def build(config, seed=0):
    return Transformer(config, rngs=nnx.Rngs(seed))


def tokens(batch=2, length=16, seed=0, vocab=64):
    return jax.random.randint(jax.random.key(seed), (batch, length), 0, vocab, jnp.int32)


@pytest.mark.parametrize("make", [gpt2, llama], ids=["gpt2", "llama"])
@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_shapes_dtypes_and_finite_with_and_without_jit(make, dtype):
    model = build(make(dtype=dtype))
    x = tokens()
    eager = model(x)
    graphdef, state = nnx.split(model)
    jitted = jax.jit(lambda s, t: nnx.merge(graphdef, s)(t))(state, x)
    for logits in (eager, jitted):
        assert logits.shape == (2, 16, 64)
        assert logits.dtype == jnp.float32  # logits in float32 whatever the compute dtype
        assert bool(jnp.isfinite(logits).all())
    tolerance = 1e-5 if dtype == "float32" else 5e-2
    np.testing.assert_allclose(eager, jitted, atol=tolerance, rtol=tolerance)
    for leaf in jax.tree.leaves(state):
        assert leaf.dtype == jnp.float32  # parameters stay float32


def _loss_at(model_state, graphdef, x, t, **kwargs):
    logits = nnx.merge(graphdef, model_state)(x, **kwargs)
    return jax.nn.log_softmax(logits[:, t]).sum()


@pytest.mark.parametrize("make", [gpt2, llama], ids=["gpt2", "llama"])
def test_causality_by_gradient(make):
    """The output at position t has zero gradient w.r.t. the tokens (and positions) after t."""
    config = make(tie_embeddings=False)  # a tied head would touch every embedding row
    graphdef, state = nnx.split(build(config))
    x = jnp.arange(16, dtype=jnp.int32)[None] + 10  # each id appears at exactly one position
    t = 7
    grads = jax.grad(_loss_at)(state, graphdef, x, t)
    row_norms = jnp.linalg.norm(grads["embed_VD"][...], axis=-1)
    ids = np.asarray(x[0])
    assert float(row_norms[ids[: t + 1]].min()) > 0  # the past does matter
    assert float(row_norms[ids[t + 1 :]].max()) == 0.0  # the future never does
    if config.position == "learned":
        pos_norms = jnp.linalg.norm(grads["pos_embed_PD"][...], axis=-1)
        assert float(pos_norms[t + 1 :].max()) == 0.0


@pytest.mark.parametrize("make", [gpt2, llama], ids=["gpt2", "llama"])
def test_packed_segments_do_not_leak(make):
    """A packed document sees only itself: same logits as when run alone, zero cross gradient."""
    config = make(tie_embeddings=False)
    graphdef, state = nnx.split(build(config))
    x = (jnp.arange(12, dtype=jnp.int32) + 10)[None]
    segments = jnp.array([[1] * 5 + [2] * 7], jnp.int32)
    positions = jnp.array([list(range(5)) + list(range(7))], jnp.int32)
    model = nnx.merge(graphdef, state)
    packed = model(x, segment_ids=segments, positions=positions)
    alone = model(x[:, 5:])
    np.testing.assert_allclose(packed[:, 5:], alone, atol=1e-5)
    grads = jax.grad(_loss_at)(state, graphdef, x, 8, segment_ids=segments, positions=positions)
    row_norms = jnp.linalg.norm(grads["embed_VD"][...], axis=-1)
    assert float(row_norms[np.asarray(x[0, :5])].max()) == 0.0


def _outputs_and_grads(config, x):
    graphdef, state = nnx.split(build(config))

    def loss(s):
        return jnp.mean(nnx.merge(graphdef, s)(x) ** 2)

    return jax.jit(jax.value_and_grad(loss))(state)


@pytest.mark.parametrize(
    "variant",
    [
        dict(scan_layers=True, remat="none"),
        dict(scan_layers=False, remat="full"),
        dict(scan_layers=True, remat="full"),
        dict(scan_layers=True, remat="dots"),
    ],
)
def test_scan_and_remat_match_the_plain_stack(variant):
    x = tokens(seed=1)
    plain_loss, plain_grads = _outputs_and_grads(llama(scan_layers=False, remat="none"), x)
    loss, grads = _outputs_and_grads(llama(**variant), x)
    np.testing.assert_allclose(loss, plain_loss, rtol=1e-6)
    for a, b in zip(jax.tree.leaves(grads), jax.tree.leaves(plain_grads), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-7)


# ~7 s each on 2 cores: the fast tier checks one family, CI's full run both.
@pytest.mark.parametrize(
    "make", [pytest.param(gpt2, marks=pytest.mark.slow), llama], ids=["gpt2", "llama"]
)
def test_bfloat16_compute_matches_float32_to_bfloat16_precision(make):
    """The speed option `model.dtype="bfloat16"` changes rounding, not the function: the same
    float32 parameters give logits and gradients equal to float32 compute within bf16's
    8-bit mantissa (a wrong cast, e.g. of the logits or the norms, would miss by far more)."""
    x = tokens(seed=3)
    f32_loss, f32_grads = _outputs_and_grads(make(), x)
    bf16_loss, bf16_grads = _outputs_and_grads(make(dtype="bfloat16"), x)
    np.testing.assert_allclose(bf16_loss, f32_loss, rtol=1e-2)
    for a, b in zip(jax.tree.leaves(bf16_grads), jax.tree.leaves(f32_grads), strict=True):
        assert np.abs(a - b).max() <= 0.05 * np.abs(b).max() + 1e-6


def test_layers_are_initialised_independently():
    state = nnx.split(build(gpt2()))[1]
    q = state["blocks"]["attn"]["q_DHK"][...]
    assert q.shape[0] == 2 and not np.allclose(q[0], q[1])


def test_grouped_attention_equals_repeated_kv_heads():
    """GQA with G kv heads equals plain multi-head attention on kv heads repeated H/G times."""
    kq, kk, kv = jax.random.split(jax.random.key(3), 3)
    q = jax.random.normal(kq, (2, 6, 4, 8))
    k = jax.random.normal(kk, (2, 6, 2, 8))
    v = jax.random.normal(kv, (2, 6, 2, 8))
    mask = jnp.tril(jnp.ones((6, 6), bool))[None, None, None]
    got = grouped_attention(q, k, v, mask)
    k_rep, v_rep = jnp.repeat(k, 2, axis=2), jnp.repeat(v, 2, axis=2)
    scores = jnp.einsum("blhk,bmhk->bhlm", q, k_rep) / np.sqrt(8)
    scores = jnp.where(jnp.tril(jnp.ones((6, 6), bool)), scores, -jnp.inf)
    want = jnp.einsum("bhlm,bmhk->blhk", jax.nn.softmax(scores, -1), v_rep)
    np.testing.assert_allclose(got, want, atol=1e-5)


def test_rotary_scores_depend_only_on_relative_position():
    q = jax.random.normal(jax.random.key(0), (1, 1, 1, 8))
    k = jax.random.normal(jax.random.key(1), (1, 1, 1, 8))

    def score(pq, pk):
        rq = rotary(q, jnp.array([[pq]]), 10_000.0)
        rk = rotary(k, jnp.array([[pk]]), 10_000.0)
        return float(jnp.sum(rq * rk))

    assert score(5, 2) == pytest.approx(score(13, 10), rel=1e-5)
    assert score(5, 2) != pytest.approx(score(5, 4), rel=1e-3)


def test_dropout_only_with_a_key():
    model = build(gpt2(dropout_rate=0.5))
    x = tokens()
    np.testing.assert_array_equal(model(x), model(x))
    a = model(x, dropout_key=jax.random.key(0))
    b = model(x, dropout_key=jax.random.key(1))
    assert not np.allclose(a, b)


def _abstract_count(config):
    state = nnx.split(nnx.eval_shape(lambda: build(config)))[1]
    return sum(int(np.prod(leaf.shape)) for leaf in jax.tree.leaves(state))


@pytest.mark.parametrize(
    "config",
    [
        gpt2(),
        llama(),
        gpt2(use_bias=False, tie_embeddings=False),
        llama(num_kv_heads=1, head_dim=16),
        gpt2(position="rope", norm="rmsnorm"),
    ],
    ids=["gpt2", "llama-gqa", "gpt2-untied", "llama-mqa-headdim", "gpt2-rope"],
)
def test_parameter_count_matches_closed_form(config):
    assert _abstract_count(config) == count_params(config)


def test_gpt2_small_has_124m_parameters():
    config = ModelConfig.gpt2(
        vocab_size=50257,
        num_layers=12,
        num_heads=12,
        embed_dim=768,
        mlp_dim=3072,
        max_seq_len=1024,
    )
    assert count_params(config) == 124_439_808
    assert _abstract_count(config) == 124_439_808
