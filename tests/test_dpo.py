"""DPO's objective: hand-computed losses, the shared-prompt packing, the frozen reference."""

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from gptjax.dpo import answer_logps, dpo_objective, preference_losses
from gptjax.model import ModelConfig, Transformer
from gptjax.steps import average_sums, make_train_step, new_train_state

MODEL = ModelConfig.llama(
    vocab_size=64, num_layers=2, num_heads=4, num_kv_heads=2, embed_dim=32, mlp_dim=64,
    max_seq_len=32,
)  # fmt: skip
L = 24


def _softplus(x: float) -> float:
    return math.log1p(math.exp(x))


def test_losses_equal_hand_computed_values():
    # log pi(w) = -10, log pi(l) = -12, log ref(w) = log ref(l) = -11, so h = 1 - (-1) = 2.
    args = [jnp.float32(v) for v in (-10.0, -12.0, -11.0, -11.0)]
    loss, reward_w, reward_l = preference_losses(
        *args, beta=0.1, label_smoothing=0.0, loss_type="sigmoid"
    )
    assert float(loss) == pytest.approx(_softplus(-0.2), rel=1e-6)  # -log sigmoid(0.2)
    assert (float(reward_w), float(reward_l)) == pytest.approx((0.1, -0.1))
    smoothed, _, _ = preference_losses(*args, beta=0.1, label_smoothing=0.1, loss_type="sigmoid")
    assert float(smoothed) == pytest.approx(0.9 * _softplus(-0.2) + 0.1 * _softplus(0.2))
    ipo, _, _ = preference_losses(*args, beta=0.1, label_smoothing=0.0, loss_type="ipo")
    assert float(ipo) == pytest.approx((2.0 - 1.0 / 0.2) ** 2)  # = 9


def _pair_row(prompt, chosen, rejected, pad_to=L):
    """One pair laid out as gptjax.data.preferences packs it (written out by hand here)."""
    p = len(prompt)
    inputs = prompt[:-1] + [prompt[-1]] + chosen[:-1] + [prompt[-1]] + rejected[:-1]
    targets = prompt[1:] + chosen + rejected
    positions = (
        list(range(p - 1))
        + list(range(p - 1, p - 1 + len(chosen)))
        + list(range(p - 1, p - 1 + len(rejected)))
    )
    branches = [0] * (p - 1) + [1] * len(chosen) + [2] * len(rejected)
    weights = [0.0] * (p - 1) + [1.0] * (len(chosen) + len(rejected))
    pad = pad_to - len(inputs)
    return {
        "inputs": inputs + [0] * pad,
        "targets": targets + [0] * pad,
        "segment_ids": [1] * len(inputs) + [0] * pad,
        "positions": positions + [0] * pad,
        "branch_ids": branches + [0] * pad,
        "weights": weights + [0.0] * pad,
    }


def _batch(rows):
    batch = {k: np.array([r[k] for r in rows]) for k in rows[0]}
    batch["weights"] = batch["weights"].astype(np.float32)
    return {k: jnp.asarray(v) for k, v in batch.items()}


def _sequence_logp(model, prompt, answer) -> float:
    """log p(answer | prompt) from one plain forward over prompt + answer."""
    tokens = jnp.asarray([prompt + answer])
    logp = jax.nn.log_softmax(model(tokens)[0], axis=-1)
    start = len(prompt) - 1
    return float(sum(logp[start + i, token] for i, token in enumerate(answer)))


PAIRS = [
    ([2, 5, 9, 11, 7], [20, 21, 22], [30, 31, 32, 33]),
    ([2, 8, 4], [40, 41, 42, 43, 44, 45], [50]),
]


def test_packed_answer_log_probs_equal_separate_forward_passes():
    """Both answers share one copy of the prompt in the row, yet each gets exactly the
    log-probability a separate forward over prompt + answer gives (float32, 1e-4)."""
    model = Transformer(MODEL, rngs=nnx.Rngs(0))
    graphdef, params = nnx.split(model)
    batch = _batch([_pair_row(*pair) for pair in PAIRS])
    chosen, rejected, chosen_tokens, rejected_tokens = jax.device_get(
        answer_logps(graphdef, params, batch)
    )
    for row, (prompt, good, bad) in enumerate(PAIRS):
        assert chosen[row, 0] == pytest.approx(_sequence_logp(model, prompt, good), abs=1e-4)
        assert rejected[row, 0] == pytest.approx(_sequence_logp(model, prompt, bad), abs=1e-4)
        assert (chosen_tokens[row, 0], rejected_tokens[row, 0]) == (len(good), len(bad))
        assert not chosen[row, 1:].any() and not rejected[row, 1:].any()  # no other segment


def _setup(beta, tx=None):
    graphdef, _ = nnx.split(Transformer(MODEL, rngs=nnx.Rngs(0)))
    tx = tx or optax.sgd(0.5)
    objective = functools.partial(dpo_objective, beta=beta, loss_type="sigmoid")
    step = jax.jit(
        make_train_step(
            graphdef, tx, optax.constant_schedule(0.0), seed=0, grad_accum_steps=1,
            use_dropout=False, objective=objective,
        )
    )  # fmt: skip
    state = new_train_state(MODEL, tx, 0)
    return graphdef, step, state


def test_the_reference_never_changes_and_the_policy_does():
    graphdef, step, state = _setup(beta=0.1)
    reference = jax.tree.map(jnp.copy, state.params)
    before = jax.tree.map(np.asarray, reference)
    batch = _batch([_pair_row(*pair) for pair in PAIRS])
    for _ in range(5):
        state, metrics = step(state, batch, reference)
    for a, b in zip(jax.tree.leaves(reference), jax.tree.leaves(before), strict=True):
        np.testing.assert_array_equal(np.asarray(a), b)  # still alive (not donated), unchanged
    moved = max(
        float(jnp.max(jnp.abs(a - b)))
        for a, b in zip(jax.tree.leaves(state.params), jax.tree.leaves(before), strict=True)
    )
    assert moved > 1e-3
    assert float(metrics["reward_accuracy"]) == 1.0 and float(metrics["reward_margin"]) > 0


@pytest.mark.slow  # 10-20 s of eager or 120-step runs on 2 cores
def test_precomputed_reference_gives_the_same_loss_and_gradient_as_the_model():
    graphdef, params = nnx.split(Transformer(MODEL, rngs=nnx.Rngs(0)))
    reference = jax.tree.map(lambda x: x * 1.01, params)  # a different model than the policy
    batch = _batch([_pair_row(*pair) for pair in PAIRS])
    ref_w, ref_l, _, _ = answer_logps(graphdef, reference, batch)
    precomputed = batch | {"reference_chosen": ref_w, "reference_rejected": ref_l}
    objective = functools.partial(dpo_objective, beta=0.3, label_smoothing=0.05)
    with_model = jax.value_and_grad(
        lambda p: objective(graphdef, p, batch, None, reference), has_aux=True
    )(params)
    with_numbers = jax.value_and_grad(
        lambda p: objective(graphdef, p, precomputed, None, None), has_aux=True
    )(params)
    assert float(with_model[0][0]) == pytest.approx(float(with_numbers[0][0]), rel=1e-6)
    for a, b in zip(jax.tree.leaves(with_model[1]), jax.tree.leaves(with_numbers[1]), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)


@pytest.mark.slow  # 10-20 s of eager or 120-step runs on 2 cores
def test_a_large_beta_keeps_the_policy_near_the_reference():
    """With the optimizer training uses (Adam), the same steps open a far smaller log-ratio
    gap h = [log pi/ref](chosen) - [log pi/ref](rejected) when beta is large: the loss
    saturates once beta * h is a few units. Measured: h = 38 nats at beta 0.05, 2.8 at 5."""
    batch = _batch([_pair_row(*pair) for pair in PAIRS])
    gap = {}
    for beta in (0.05, 5.0):
        _, step, state = _setup(beta, optax.adam(3e-3))
        reference = jax.tree.map(jnp.copy, state.params)
        for _ in range(60):
            state, metrics = step(state, batch, reference)
        gap[beta] = float(metrics["reward_margin"]) / beta
    assert 0 < gap[5.0] < gap[0.05] / 5


@pytest.mark.slow  # 10-20 s of eager or 120-step runs on 2 cores
def test_per_kind_figures_equal_those_of_each_kind_alone():
    """Tagged held-out pairs: each kind's reward and likelihood accuracy and margin are the
    figures its pairs give evaluated alone; a kind with no pair is NaN, not 0."""
    graphdef, params = nnx.split(Transformer(MODEL, rngs=nnx.Rngs(0)))
    reference = jax.tree.map(lambda x: x * 1.05, params)
    pairs = [*PAIRS, ([2, 6, 3], [12, 13], [14, 15, 16]), ([2, 9], [17], [18, 19])]
    kinds = [1, 2, 1, 1]  # 1-based into ("hard", "easy", "absent")
    rows = [_pair_row(*pair) for pair in pairs]
    for row, kind in zip(rows, kinds, strict=True):
        row["pair_kinds"] = [kind] + [0] * (L - 1)  # column s-1 holds segment s's kind
    objective = functools.partial(
        dpo_objective, beta=0.5, reference=reference, pair_kinds=("hard", "easy", "absent")
    )
    loss, sums = objective(graphdef, params, _batch(rows), None)
    tagged = average_sums(loss, jax.device_get(sums), np)
    for name, kind in (("hard", 1), ("easy", 2)):
        alone_rows = [row for row, k in zip(rows, kinds, strict=True) if k == kind]
        alone = average_sums(*objective(graphdef, params, _batch(alone_rows), None), np)
        assert tagged[f"weight/{name}"] == len(alone_rows)
        for metric in ("reward_accuracy", "likelihood_accuracy", "reward_margin"):
            assert tagged[f"{metric}/{name}"] == pytest.approx(float(alone[metric]), abs=1e-6)
    assert tagged["weight/absent"] == 0 and math.isnan(tagged["reward_accuracy/absent"])
    # The likelihood accuracy is the policy's own preference: 1 where log pi(w) > log pi(l).
    chosen, rejected, _, _ = answer_logps(graphdef, params, _batch(rows))
    wins = [float(chosen[i, 0] > rejected[i, 0]) for i, k in enumerate(kinds) if k == 1]
    assert tagged["likelihood_accuracy/hard"] == pytest.approx(sum(wins) / len(wins))
