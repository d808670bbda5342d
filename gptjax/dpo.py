"""Direct Preference Optimization: the objective of the recipe's third phase.

For a prompt x with a chosen answer y_w and a rejected one y_l, the policy π (initialised from
the SFT model) is pushed to raise the log-likelihood ratio of y_w over y_l more than a frozen
reference π_ref (the same SFT weights) does:

    h = [log π(y_w|x) - log π_ref(y_w|x)] - [log π(y_l|x) - log π_ref(y_l|x)]
    sigmoid (DPO, Rafailov et al. 2023):  loss = -(1-ε)·log σ(β·h) - ε·log σ(-β·h)
        (ε = label_smoothing > 0 is conservative DPO: it assumes a fraction ε of the labels
        are flipped)
    ipo (Azar et al. 2023):              loss = (h - 1/(2β))², with log-probabilities
        averaged over each answer's tokens (as TRL does), since IPO regresses h to a target

The implicit rewards are r = β·(log π - log π_ref) of each answer; reward accuracy is how often
r(y_w) > r(y_l), the margin their mean difference. Pairs arrive packed (gptjax.data.preferences):
one segment per pair, the prompt once in branch 0 and the answers in branches 1 and 2, so the
log-probability of an answer is the sum of its target tokens' log-probabilities in its branch.

The reference is either a second copy of the parameters passed to every step (never updated,
never donated) or, with `dpo.reference="precomputed"`, each pair's reference log-probabilities
computed once before training and carried in the batch (`reference_chosen`/`reference_rejected`,
indexed by segment), which saves the reference's memory and forward pass.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from flax import nnx

from gptjax.chunked_head import model_token_nll

LOSS_TYPES = ("sigmoid", "ipo")
REFERENCE_MODES = ("model", "precomputed")


def answer_logps(graphdef, params, batch, dropout_key=None):
    """Per pair (indexed by segment id - 1): (chosen, rejected) log-prob sums and token counts,
    each [B, L] float32 (column s-1 is segment s; columns without a pair are 0)."""
    model = nnx.merge(graphdef, params)
    if model.config.head_chunk_len:  # the [B, L, V] logits never exist at once
        nll_BL, _ = model_token_nll(model, batch, dropout_key, branch_ids=batch["branch_ids"])
        token_logp_BL = -nll_BL
    else:
        logits_BLV = model(
            batch["inputs"],
            segment_ids=batch["segment_ids"],
            positions=batch["positions"],
            branch_ids=batch["branch_ids"],
            dropout_key=dropout_key,
        ).astype(jnp.float32)
        target_logit_BL = jnp.take_along_axis(logits_BLV, batch["targets"][..., None], -1)[..., 0]
        token_logp_BL = target_logit_BL - jax.nn.logsumexp(logits_BLV, axis=-1)
    B, L = batch["inputs"].shape
    # Sums per (row, segment) with one segment_sum over flattened ids: no [B, L, L] one-hot.
    flat_ids = (jnp.arange(B)[:, None] * (L + 1) + batch["segment_ids"]).reshape(-1)
    weights_BL = batch["weights"].astype(jnp.float32)

    def per_pair(values_BL, branch):
        chosen = jnp.where(batch["branch_ids"] == branch, values_BL * weights_BL, 0.0)
        sums = jax.ops.segment_sum(chosen.reshape(-1), flat_ids, num_segments=B * (L + 1))
        return sums.reshape(B, L + 1)[:, 1:]

    ones_BL = jnp.ones_like(token_logp_BL)
    return (
        per_pair(token_logp_BL, 1),
        per_pair(token_logp_BL, 2),
        per_pair(ones_BL, 1),
        per_pair(ones_BL, 2),
    )


def preference_losses(
    policy_w, policy_l, reference_w, reference_l, *, beta, label_smoothing, loss_type
):
    """Per-pair loss and implicit rewards from answer log-probabilities (any shape)."""
    h = (policy_w - reference_w) - (policy_l - reference_l)
    if loss_type == "ipo":
        losses = (h - 1.0 / (2.0 * beta)) ** 2
    else:
        losses = -(1.0 - label_smoothing) * jax.nn.log_sigmoid(
            beta * h
        ) - label_smoothing * jax.nn.log_sigmoid(-beta * h)
    return losses, beta * (policy_w - reference_w), beta * (policy_l - reference_l)


def dpo_objective(
    graphdef,
    params,
    batch,
    dropout_key,
    reference=None,
    *,
    beta: float,
    label_smoothing: float = 0.0,
    loss_type: str = "sigmoid",
    pair_kinds: tuple[str, ...] = (),
):
    """(sum of pair losses, sums) for `gptjax.steps`: the weight is the number of pairs.

    With `pair_kinds` bound and a batch that carries `pair_kinds` (held-out rows of tagged
    pairs, gptjax.data.preferences), the sums also hold the pairs of each kind
    (`weight/KIND`) and their reward accuracy, likelihood accuracy and reward margin
    (`NAME/KIND`), which `gptjax.steps.average_sums` divides by that kind's weight.
    """
    policy_w, policy_l, tokens_w, tokens_l = answer_logps(graphdef, params, batch, dropout_key)
    if reference is None:  # precomputed once, carried in the batch
        reference_w, reference_l = batch["reference_chosen"], batch["reference_rejected"]
    else:
        reference_w, reference_l, _, _ = jax.lax.stop_gradient(
            answer_logps(graphdef, reference, batch)
        )
    pair = (tokens_w > 0) & (tokens_l > 0)
    if loss_type == "ipo":
        w_len, l_len = jnp.maximum(tokens_w, 1.0), jnp.maximum(tokens_l, 1.0)
        scored = (policy_w / w_len, policy_l / l_len, reference_w / w_len, reference_l / l_len)
    else:
        scored = (policy_w, policy_l, reference_w, reference_l)
    losses, reward_w, reward_l = preference_losses(
        *scored, beta=beta, label_smoothing=label_smoothing, loss_type=loss_type
    )
    count = lambda x: jnp.sum(jnp.where(pair, x, 0.0))
    answer_tokens = jnp.maximum(tokens_w + tokens_l, 1.0)
    sums = {
        "weight": count(1.0),
        "reward_accuracy": count((reward_w > reward_l).astype(jnp.float32)),
        # How often the policy itself finds the chosen answer likelier (no reference): at step
        # 0 this is the SFT model's own preference, the baseline DPO should improve on.
        "likelihood_accuracy": count((policy_w > policy_l).astype(jnp.float32)),
        "reward_margin": count(reward_w - reward_l),
        "chosen_reward": count(reward_w),
        "rejected_reward": count(reward_l),
        # Mean log-probability per answer token: watch that the chosen one does not collapse.
        "chosen_logp": count(policy_w / jnp.maximum(tokens_w, 1.0)),
        "rejected_logp": count(policy_l / jnp.maximum(tokens_l, 1.0)),
        # Mean per-token log π/π_ref over both answers: how far the policy moved from the
        # reference on the preference data (an estimate of their KL divergence there).
        "kl": count((policy_w - reference_w + policy_l - reference_l) / answer_tokens),
    }
    if pair_kinds and "pair_kinds" in batch:
        sums |= _per_kind_sums(
            batch["pair_kinds"],
            pair_kinds,
            pair,
            {
                "reward_accuracy": (reward_w > reward_l).astype(jnp.float32),
                "likelihood_accuracy": (policy_w > policy_l).astype(jnp.float32),
                "reward_margin": reward_w - reward_l,
            },
        )
    return count(losses), sums


def _per_kind_sums(kind_ids, pair_kinds: tuple[str, ...], pair, values: dict) -> dict:
    """{"weight/KIND": pairs of that kind, "NAME/KIND": sum of values[NAME] over them}; kind
    ids are 1-based indices into `pair_kinds`, laid out per segment like the log-probs."""
    sums = {}
    for index, kind in enumerate(pair_kinds, start=1):
        of_kind = pair & (kind_ids == index)
        sums[f"weight/{kind}"] = jnp.sum(of_kind.astype(jnp.float32))
        for name, value in values.items():
            sums[f"{name}/{kind}"] = jnp.sum(jnp.where(of_kind, value, 0.0))
    return sums


def make_dpo_objective(dpo_config, pair_kinds: tuple[str, ...] = ()):
    return functools.partial(
        dpo_objective,
        beta=float(dpo_config.beta),
        label_smoothing=float(dpo_config.label_smoothing),
        loss_type=dpo_config.loss,
        pair_kinds=tuple(pair_kinds),
    )
