"""Optimizer: AdamW with a weight-decay mask, linear warmup + cosine decay, global-norm clipping."""

from __future__ import annotations

import jax
import optax
from flax import nnx


def learning_rate_schedule(
    peak_lr: float, warmup_steps: int, total_steps: int, end_lr_fraction: float
) -> optax.Schedule:
    """Linear warmup from 0 to `peak_lr`, then cosine decay to `peak_lr * end_lr_fraction`."""
    return optax.warmup_cosine_decay_schedule(
        init_value=0.0,
        peak_value=peak_lr,
        warmup_steps=warmup_steps,
        decay_steps=max(total_steps, warmup_steps + 1),
        end_value=peak_lr * end_lr_fraction,
    )


def decay_mask(params) -> object:
    """True for weight matrices, False for norms, biases and other vectors.

    Layers are stacked, so a bias has shape [layers, D]: the rule counts the parameter's
    logical axes other than `layers`, not its ndim.
    """

    def is_matrix(leaf):
        names = leaf.get_metadata().get("out_sharding") or ()
        return sum(name != "layers" for name in names) >= 2

    return jax.tree.map(is_matrix, params, is_leaf=lambda x: isinstance(x, nnx.Variable))


def make_optimizer(
    optim_config, total_steps: int
) -> tuple[optax.GradientTransformation, optax.Schedule]:
    """AdamW from the `optim` section of a config (see configs/tiny.py for the fields)."""
    schedule = learning_rate_schedule(
        optim_config.peak_lr, optim_config.warmup_steps, total_steps, optim_config.end_lr_fraction
    )
    tx = optax.chain(
        optax.clip_by_global_norm(optim_config.clip_norm),
        optax.adamw(
            schedule,
            b1=optim_config.b1,
            b2=optim_config.b2,
            eps=optim_config.eps,
            weight_decay=optim_config.weight_decay,
            mask=decay_mask,
        ),
    )
    return tx, schedule
