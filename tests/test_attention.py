"""Attention implementations: each equals the xla reference in outputs and q/k/v gradients."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax.core import spmd as flax_spmd

from gptjax.attention import attend, attention_mask, check_implementation, grouped_attention
from gptjax.errors import ConfigError
from gptjax.sharding import DEFAULT_RULES


def qkv(B=2, L=16, H=4, G=2, K=8, dtype=jnp.float32, seed=0):
    kq, kk, kv = jax.random.split(jax.random.key(seed), 3)
    return (
        jax.random.normal(kq, (B, L, H, K), dtype),
        jax.random.normal(kk, (B, L, G, K), dtype),
        jax.random.normal(kv, (B, L, G, K), dtype),
    )


def packed_ids(B, L):
    """Row 0: three documents of uneven lengths then padding (segment 0); row 1: one."""
    a, b = L // 5, L // 2
    row0 = np.concatenate([np.full(a, 1), np.full(b - a, 2), np.full(L - 8 - b, 3), np.zeros(8)])
    rows = [row0, np.ones(L)] * (B // 2) + [row0] * (B % 2)
    return jnp.asarray(np.stack(rows), jnp.int32)


def branch_ids(L):
    """One row of two DPO pairs (a segment each): prompt branch 0, chosen 1, rejected 2."""
    half = L // 2
    one = np.concatenate([np.zeros(half // 4), np.ones(half // 4 * 2), np.full(half // 4, 2)])
    segments = np.concatenate([np.ones(half), np.full(L - half, 2)])
    branches = np.concatenate([one, one, np.zeros(L - 2 * len(one))])
    return jnp.asarray(segments[None], jnp.int32), jnp.asarray(branches[None], jnp.int32)


def outputs_and_grads(impl, q, k, v, **kwargs):
    """attend's output and the gradients of a weighted sum of it w.r.t. q, k and v."""
    weights = jax.random.normal(jax.random.key(9), q.shape, jnp.float32)

    def loss(q, k, v):
        out = attend(q, k, v, impl=impl, **kwargs)
        return (out.astype(jnp.float32) * weights).sum(), out

    (_, out), grads = jax.jit(jax.value_and_grad(loss, argnums=(0, 1, 2), has_aux=True))(q, k, v)
    return out, grads


def assert_same(got, want, atol, rtol=1e-5):
    (out, grads), (want_out, want_grads) = got, want
    np.testing.assert_allclose(np.float32(out), np.float32(want_out), atol=atol, rtol=rtol)
    for name, g, w in zip("qkv", grads, want_grads, strict=True):
        np.testing.assert_allclose(
            np.float32(g), np.float32(w), atol=atol, rtol=rtol, err_msg=f"d{name}"
        )


def test_xla_is_the_masked_einsum_path_bit_for_bit():
    """ "xla" is exactly the path the model has always taken (and decoding still takes)."""
    q, k, v = qkv()
    segment_ids = packed_ids(2, 16)
    got = attend(q, k, v, impl="xla", segment_ids_BL=segment_ids)
    np.testing.assert_array_equal(got, grouped_attention(q, k, v, attention_mask(segment_ids)))
    ones = jnp.ones((2, 16), jnp.int32)
    np.testing.assert_array_equal(attend(q, k, v), grouped_attention(q, k, v, attention_mask(ones)))


def test_xla_keeps_documents_and_branches_apart():
    """Changing keys of another document, or of the other response, leaves outputs unchanged."""
    q, k, v = qkv(B=1, L=32)
    segment_ids, branches = branch_ids(32)
    out = attend(q, k, v, segment_ids_BL=segment_ids, branch_ids_BL=branches)
    # The rejected response of pair 1 (branch 2, segment 1) and all of pair 2 (segment 2).
    hidden = (branches[0] == 2) | (segment_ids[0] == 2)
    k2 = jnp.where(hidden[None, :, None, None], k + 5.0, k)
    v2 = jnp.where(hidden[None, :, None, None], v - 3.0, v)
    out2 = attend(q, k2, v2, segment_ids_BL=segment_ids, branch_ids_BL=branches)
    chosen = (branches[0] == 1) & (segment_ids[0] == 1)
    np.testing.assert_array_equal(out[0, chosen], out2[0, chosen])
    assert not np.allclose(out[0, hidden], out2[0, hidden])


@pytest.mark.parametrize("G", [4, 2, 1])
@pytest.mark.parametrize("layout", ["single", "packed", "branches"])
def test_dot_product_equals_xla(layout, G):
    q, k, v = qkv(B=1 if layout == "branches" else 2, L=32, G=G)
    kwargs = {}
    if layout == "packed":
        kwargs = dict(segment_ids_BL=packed_ids(2, 32))
    if layout == "branches":
        segment_ids, branches = branch_ids(32)
        kwargs = dict(segment_ids_BL=segment_ids, branch_ids_BL=branches)
    want = outputs_and_grads("xla", q, k, v, **kwargs)
    assert_same(outputs_and_grads("dot_product", q, k, v, **kwargs), want, atol=1e-5)


@pytest.mark.parametrize("L", [32, 40])
@pytest.mark.parametrize("layout", ["single", "packed", "branches"])
def test_chunked_equals_xla(layout, L, monkeypatch):
    """Chunks of 8 rows: 4 (L=32) or 5 with a short last one (L=40), GQA with G=2."""
    monkeypatch.setattr("gptjax.attention.CAUSAL_CHUNK", 8)
    q, k, v = qkv(B=1 if layout == "branches" else 2, L=L, G=2)
    kwargs = {}
    if layout == "packed":
        kwargs = dict(segment_ids_BL=packed_ids(2, L))
    if layout == "branches":
        segment_ids, branches = branch_ids(L)
        kwargs = dict(segment_ids_BL=segment_ids, branch_ids_BL=branches)
    want = outputs_and_grads("xla", q, k, v, **kwargs)
    assert_same(outputs_and_grads("chunked", q, k, v, **kwargs), want, atol=1e-5)


def test_chunked_computes_fewer_scores():
    """What makes it faster: the compiled forward multiplies fewer score entries (5/8 of
    L x L at 4 chunks), visible in XLA's own FLOP count."""
    q, k, v = qkv(B=2, L=256, H=4, G=4, K=16)

    def flops(impl):
        lowered = jax.jit(lambda q, k, v: attend(q, k, v, impl=impl)).lower(q, k, v)
        return lowered.compile().cost_analysis()["flops"]

    assert flops("chunked") < 0.75 * flops("xla")


def test_dot_product_equals_xla_in_bfloat16():
    q, k, v = qkv(L=32, dtype=jnp.bfloat16)
    kwargs = dict(segment_ids_BL=packed_ids(2, 32))
    want = outputs_and_grads("xla", q, k, v, **kwargs)
    assert_same(outputs_and_grads("dot_product", q, k, v, **kwargs), want, atol=2e-2, rtol=1e-2)


@pytest.mark.parametrize(
    ("G", "packed", "dtype", "atol"),
    [(2, True, jnp.float32, 1e-4), (1, False, jnp.float32, 1e-4), (2, True, jnp.bfloat16, 3e-2)],
    ids=["gqa-packed", "mqa-single", "gqa-packed-bf16"],
)
def test_splash_in_interpret_mode_equals_xla(G, packed, dtype, atol):
    """L = 384 with 128-blocks: three query blocks, so causal block skipping is exercised."""
    q, k, v = qkv(B=2, L=384, H=4, G=G, K=64, dtype=dtype)
    kwargs = dict(segment_ids_BL=packed_ids(2, 384)) if packed else {}
    want = outputs_and_grads("xla", q, k, v, **kwargs)
    got = outputs_and_grads("splash", q, k, v, interpret=True, **kwargs)
    assert_same(got, want, atol=atol, rtol=1e-2 if dtype == jnp.bfloat16 else 1e-5)


@pytest.mark.parametrize(
    ("mesh_shape", "H", "G"),
    [((2, 2, 2), 4, 2), ((2, 1, 4), 8, 2)],
    ids=["heads-split", "heads-replicated"],
)
def test_splash_under_a_mesh_runs_per_shard(mesh_shape, H, G):
    """Batch over (data, fsdp), kv heads over tensor; with G=2 on tensor=4 heads replicate."""
    devices = np.array(jax.devices()[:8]).reshape(mesh_shape)
    mesh = jax.sharding.Mesh(
        devices, ("data", "fsdp", "tensor"), axis_types=(jax.sharding.AxisType.Auto,) * 3
    )
    q, k, v = qkv(B=4, L=256, H=H, G=G, K=64, seed=1)
    kwargs = dict(segment_ids_BL=packed_ids(4, 256))
    want = outputs_and_grads("xla", q, k, v, **kwargs)
    with jax.set_mesh(mesh), flax_spmd.logical_axis_rules(DEFAULT_RULES):
        got = outputs_and_grads("splash", q, k, v, interpret=True, **kwargs)
    assert_same(got, want, atol=1e-4)


@pytest.mark.parametrize(
    ("impl", "kwargs", "shape", "message"),
    [
        ("cudnn", {}, {}, "needs a GPU"),
        ("splash", {}, dict(L=256), "is a TPU kernel"),
        ("splash", dict(interpret=True), dict(L=200), "multiple of 128"),
        ("splash", dict(interpret=True, branches=True), dict(L=256, B=1), "branch_ids"),
        ("flash", {}, {}, "model.attention must be one of"),
    ],
    ids=["cudnn-on-cpu", "splash-on-cpu", "splash-length", "splash-branches", "unknown"],
)
def test_unsupported_combinations_raise_one_line(impl, kwargs, shape, message):
    q, k, v = qkv(**shape)
    if kwargs.pop("branches", False):
        segment_ids, branches = branch_ids(q.shape[1])
        kwargs |= dict(segment_ids_BL=segment_ids, branch_ids_BL=branches)
    with pytest.raises(ConfigError, match=message) as error:
        attend(q, k, v, impl=impl, **kwargs)
    assert "\n" not in str(error.value) and "model.attention" in str(error.value)


@pytest.mark.parametrize(
    ("impl", "dtype", "head_dim", "message"),
    [
        ("cudnn", "float32", 64, "model.dtype='bfloat16'"),
        ("cudnn", "bfloat16", 12, "multiple of 8"),
        ("cudnn", "bfloat16", 512, "<= 256"),
        ("paged", "float32", 64, "must be one of"),
    ],
)
def test_config_checks_before_compile(impl, dtype, head_dim, message):
    with pytest.raises(ConfigError, match=message):
        check_implementation(impl, dtype=dtype, head_dim=head_dim)
    for ok in ("xla", "dot_product", "splash"):
        check_implementation(ok, dtype=dtype, head_dim=head_dim)
    check_implementation("cudnn", dtype="bfloat16", head_dim=128)
