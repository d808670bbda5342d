"""`loss_terms`: the cross-entropy and accuracy sums every next-token step reports."""

import jax
import jax.numpy as jnp
import numpy as np

from gptjax.steps import loss_terms


def test_accuracy_counts_argmax_hits_and_the_loss_is_cross_entropy():
    """The max comparison (it reuses logsumexp's max) counts what argmax counts, weighted."""
    logits = jax.random.normal(jax.random.key(0), (3, 20, 50)) * 3.0
    targets = jax.random.randint(jax.random.key(1), (3, 20), 0, 50)
    # Make about half of the targets the top prediction, so both outcomes are counted.
    targets = jnp.where(jnp.arange(20) % 2 == 0, jnp.argmax(logits, -1), targets)
    weights = jnp.ones((3, 20)).at[1, 5:].set(0.0)
    ce_sum, correct_sum, weight_sum = jax.jit(loss_terms)(logits, targets, weights)
    hits = (np.argmax(logits, -1) == np.asarray(targets)) * np.asarray(weights)
    assert 0 < hits.sum() < weights.sum()
    assert float(correct_sum) == hits.sum()
    log_probs = jax.nn.log_softmax(logits, -1)
    want = -(np.take_along_axis(log_probs, targets[..., None], -1)[..., 0] * weights).sum()
    np.testing.assert_allclose(float(ce_sum), want, rtol=1e-6)
    assert float(weight_sum) == 45.0


def test_a_tie_for_the_top_logit_counts_as_correct():
    """Documented semantics: a target whose logit equals the maximum is a hit (argmax would
    name only the first of the tied ids)."""
    logits = jnp.array([[[1.0, 3.0, 3.0, 0.0]]])
    weights = jnp.ones((1, 1))
    for target, hit in ((1, 1.0), (2, 1.0), (0, 0.0)):
        _, correct_sum, _ = loss_terms(logits, jnp.array([[target]]), weights)
        assert float(correct_sum) == hit
