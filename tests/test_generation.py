"""Prefill + KV-cache decoding: equal to full forwards, greedy equals a naive loop, sampling
filters, stop ids, validation, compiled-function re-use, and a sharded mesh equal to one device."""

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from flax.core import spmd as flax_spmd

from gptjax import ConfigError, ModelConfig, Transformer, sharding
from gptjax.generation import _compiled, generate, generate_stream, sample_next
from gptjax.model import KVCache

SMALL = dict(vocab_size=64, num_layers=2, num_heads=4, embed_dim=32, mlp_dim=64, max_seq_len=32)
# A larger init spread than training's 0.02 so a random model's greedy continuations vary
# instead of repeating one token (a test of decoding positions needs varied tokens).
CONFIGS = {
    "gpt2": ModelConfig.gpt2(**SMALL, init_std=0.2),
    "llama": ModelConfig.llama(**SMALL, num_kv_heads=2, init_std=0.2),  # GQA, rope, untied
}
PROMPTS = [[5, 9, 2], [7, 1, 8, 30, 4, 4, 12, 50, 3], [11], [20, 21, 22, 23, 24]]
CONTEXT = 24  # full forwards run on [4, 24] rows: one compile shared by the tests below


@functools.cache
def split_model(name: str, scan_layers: bool = True, dtype: str = "float32"):
    config = dataclasses.replace(CONFIGS[name], scan_layers=scan_layers, dtype=dtype)
    return nnx.split(Transformer(config, rngs=nnx.Rngs(0)))


@functools.cache
def full_forward(graphdef):
    return jax.jit(lambda params, tokens: nnx.merge(graphdef, params)(tokens))


@pytest.mark.parametrize(
    "name, scan_layers, dtype",
    [
        ("gpt2", True, "float32"),
        ("gpt2", False, "float32"),
        ("llama", True, "float32"),
        ("llama", False, "float32"),
        ("llama", True, "bfloat16"),
    ],
    ids=["gpt2-scan", "gpt2-unrolled", "llama-scan", "llama-unrolled", "llama-scan-bf16"],
)
def test_cached_decoding_matches_the_full_forward_at_every_position(name, scan_layers, dtype):
    """Right-padded prefill of different-length prompts, then one token per step per row."""
    graphdef, params = split_model(name, scan_layers, dtype)
    config = graphdef_config(graphdef, params)
    tokens = np.asarray(jax.random.randint(jax.random.key(1), (4, CONTEXT), 0, 64, jnp.int32))
    full = np.asarray(full_forward(graphdef)(params, tokens))
    prompt_lengths = np.array([5, 9, 1, 12])
    padded = np.where(np.arange(12) < prompt_lengths[:, None], tokens[:, :12], 63)

    @jax.jit
    def decode(params, tokens_BL, cache, start_B):
        return nnx.merge(graphdef, params).decode(tokens_BL, cache, start_B)

    cache = KVCache.empty(config, 4, config.max_seq_len)
    logits, cache = decode(params, padded, cache, np.zeros(4, np.int32))
    # The cache path sums softmax terms over S slots (the masked ones are exact zeros) in
    # another order than the full pass, so only rounding differs: 1e-5 in float32 (measured:
    # ~1e-7); bf16 keys/values are the same bf16 numbers in both paths (measured: equal), and
    # 2e-2 is bf16's rounding step at these logit sizes (|logit| < 5).
    atol = 1e-5 if dtype == "float32" else 2e-2
    for row, n in enumerate(prompt_lengths):
        np.testing.assert_allclose(logits[row, :n], full[row, :n], atol=atol, rtol=0)
    rows = np.arange(4)
    for t in range(CONTEXT - prompt_lengths.max()):
        positions = prompt_lengths + t
        logits, cache = decode(params, tokens[rows, positions][:, None], cache, positions)
        np.testing.assert_allclose(logits[:, 0], full[rows, positions], atol=atol, rtol=0)
    assert cache.k_NBSGK.shape == (2, 4, config.max_seq_len, config.kv_heads, 8)
    assert cache.k_NBSGK.dtype == config.compute_dtype


def graphdef_config(graphdef, params) -> ModelConfig:
    return nnx.merge(graphdef, params).config


def naive_greedy(graphdef, params, prompts, max_new_tokens):
    """argmax of full forwards over the growing sequences (zero-padded: causal, so harmless)."""
    sequences = [list(p) for p in prompts]
    for _ in range(max_new_tokens):
        padded = np.zeros((len(prompts), CONTEXT), np.int32)
        for row, sequence in enumerate(sequences):
            padded[row, : len(sequence)] = sequence
        logits = np.asarray(full_forward(graphdef)(params, padded))
        for row, sequence in enumerate(sequences):
            sequence.append(int(np.argmax(logits[row, len(sequence) - 1])))
    return [s[len(p) :] for s, p in zip(sequences, prompts, strict=True)]


@pytest.mark.parametrize("name", ["gpt2", "llama"])
def test_greedy_equals_a_naive_loop_of_full_forwards(name):
    graphdef, params = split_model(name)
    got = generate(graphdef, params, PROMPTS, max_new_tokens=10)
    want = naive_greedy(graphdef, params, PROMPTS, 10)
    assert got == want
    assert len(set(want[1])) > 1  # the continuation is not one repeated token


def test_stop_ids_end_a_row_and_are_not_returned():
    graphdef, params = split_model("llama")
    free = generate(graphdef, params, PROMPTS, max_new_tokens=10)
    stop = free[0][2]
    assert stop not in free[0][:2]
    got = generate(graphdef, params, PROMPTS, max_new_tokens=10, stop_ids=(stop,))
    want = [row[: row.index(stop)] if stop in row else row for row in free]
    assert got == want
    steps = list(generate_stream(graphdef, params, PROMPTS, max_new_tokens=10, stop_ids=(stop,)))
    assert [s[0] for s in steps[:2]] == free[0][:2]
    assert all(s[0] is None for s in steps[2:])  # stopped, while other rows go on
    # Every row stopping at once ends the stream early.
    alone = generate_stream(graphdef, params, PROMPTS[:1], max_new_tokens=10, stop_ids=[stop])
    assert list(alone) == [[t] for t in free[0][:2]]
    assert generate(graphdef, params, PROMPTS, max_new_tokens=0) == [[], [], [], []]


def test_prompts_of_other_lengths_reuse_the_compiled_functions():
    graphdef, params = split_model("gpt2")
    generate(graphdef, params, [[1, 2, 3], [4]], max_new_tokens=5)
    prefill, step = _compiled(graphdef, 0.0, 0, 1.0, 1.0, 0)
    sizes = (prefill._cache_size(), step._cache_size())
    generate(graphdef, params, [[1, 2, 3, 4, 5, 6, 7], [8, 9]], max_new_tokens=6)
    assert (prefill._cache_size(), step._cache_size()) == sizes  # same (P=16, S=16) buckets


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(prompts=[[1, 2], []]), "prompt 1 is empty"),
        (dict(prompts=[[1] * 30], max_new_tokens=3), "exceeds the model's context of 32"),
        (dict(temperature=-0.5), "temperature"),
        (dict(top_k=-1), "top_k"),
        (dict(top_k=65), "top_k"),
        (dict(top_p=0.0), "top_p"),
        (dict(top_p=1.5), "top_p"),
        (dict(max_new_tokens=-1), "max_new_tokens"),
        (dict(prompts=[[64]]), "outside"),
    ],
)
def test_bad_arguments_raise_one_clear_config_error(kwargs, message):
    graphdef, params = split_model("gpt2")
    call = dict(prompts=[[1, 2]], max_new_tokens=4) | kwargs
    prompts = call.pop("prompts")
    with pytest.raises(ConfigError, match=message):
        generate_stream(graphdef, params, prompts, **call)  # raised before the first next()


def draws(logits_V, temperature=1.0, top_k=0, top_p=1.0, rows=4000, seed=0):
    logits_BV = jnp.broadcast_to(jnp.asarray(logits_V, jnp.float32), (rows, len(logits_V)))
    return np.asarray(sample_next(logits_BV, jax.random.key(seed), temperature, top_k, top_p))


def nucleus(probs, top_p):
    """Independent numpy reference: the fewest most-probable tokens with mass >= top_p."""
    order = np.argsort(-probs)
    count = int(np.searchsorted(np.cumsum(probs[order]), top_p) + 1)
    return set(order[:count].tolist())


LOGITS = np.log(np.array([0.05, 0.3, 0.02, 0.2, 0.15, 0.01, 0.12, 0.1, 0.05]))


def test_top_k_and_top_p_sample_only_allowed_tokens():
    probs = np.exp(LOGITS) / np.exp(LOGITS).sum()
    top3 = set(np.argsort(-probs)[:3].tolist())
    assert set(draws(LOGITS, top_k=3).tolist()) == top3  # all of them, and nothing else
    # Nucleus masses are 0.3, 0.5, 0.65, 0.77, 0.87: top_p values well clear of the edges.
    for top_p in (0.25, 0.6, 0.8):
        assert set(draws(LOGITS, top_p=top_p).tolist()) == nucleus(probs, top_p)
    # top-k first, then the nucleus of the renormalised top-k distribution.
    kept = np.where(np.isin(np.arange(9), list(top3)), probs, 0) / probs[list(top3)].sum()
    assert set(draws(LOGITS, top_k=3, top_p=0.7).tolist()) == nucleus(kept, 0.7)
    assert set(draws(LOGITS, temperature=0.0).tolist()) == {1}


def test_temperature_scales_the_sampled_frequencies():
    tempered = np.exp(LOGITS / 0.5) / np.exp(LOGITS / 0.5).sum()
    counts = np.bincount(draws(LOGITS, temperature=0.5), minlength=9) / 4000
    # 4000 draws: a frequency's standard deviation is <= 0.008, so 0.03 is ~4 sigma.
    np.testing.assert_allclose(counts, tempered, atol=0.03)


def test_sampling_is_reproducible_for_a_seed():
    graphdef, params = split_model("llama")
    settings = dict(max_new_tokens=8, temperature=1.0, top_k=20, top_p=0.9)
    first = generate(graphdef, params, PROMPTS, seed=3, **settings)
    assert generate(graphdef, params, PROMPTS, seed=3, **settings) == first
    assert generate(graphdef, params, PROMPTS, seed=4, **settings) != first


def test_generation_on_a_data_2_tensor_4_mesh_equals_one_device():
    """Greedy ids on a (data=2, tensor=4) mesh, params sharded as in training, match exactly."""
    config = CONFIGS["gpt2"]  # 4 heads and 4 kv heads: both split over tensor=4
    graphdef, params = split_model("gpt2")
    want = generate(graphdef, params, PROMPTS, max_new_tokens=8)
    mesh = sharding.make_mesh(dict(data=2, fsdp=1, tensor=4))
    rules = sharding.DEFAULT_RULES

    def create():
        return nnx.state(Transformer(config, rngs=nnx.Rngs(0)))

    with jax.set_mesh(mesh), flax_spmd.logical_axis_rules(rules):
        sharded, _ = sharding.sharded_init(create, mesh, rules)
        assert sharded["blocks"]["attn"]["q_DHK"][...].sharding.spec[2] == "tensor"
        got = generate(graphdef, sharded, PROMPTS, max_new_tokens=8)
        # The same shapes as that call's prefill (P=16, S=32), so nothing compiles again.
        prefill, _ = _compiled(graphdef, 0.0, 0, 1.0, 1.0, 0)
        lengths = jnp.asarray(np.full(4, 3, np.int32))
        tokens = np.ones((4, 16), np.int32)
        _, cache, _ = prefill(sharded, tokens, lengths, jax.random.key(0), cache_len=32)
    assert got == want
    # [N, B, S, G, K]: rows over data, kv heads over tensor, as the logical names say.
    spec = jax.sharding.PartitionSpec(None, "data", None, "tensor", None)
    assert cache.k_NBSGK.sharding.is_equivalent_to(jax.sharding.NamedSharding(mesh, spec), 5)
