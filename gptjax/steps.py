"""TrainState, the loss, and the pure jitted train/eval steps.

Steps are pure: `train_step(state, batch) -> (state, metrics)`. What they minimise is a loss
function (`lm_objective`: next-token cross-entropy; `gptjax.dpo.dpo_objective`), the `loss` of
a phase's `gptjax.objectives.Objective`. Configuration enters by closure when the step is
built, never as a traced argument. Dropout randomness is `fold_in(key(seed), step)`, so a
resumed run draws the same masks as an uninterrupted one.

With LoRA (`gptjax.lora`) `TrainState.params` holds only the adapters: the base weights are a
frozen input of the step (`frozen_base`), never differentiated, updated or donated, and with
DPO the reference is that base with the adapters off (no second copy of the weights).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable

import flax.struct
import jax
import jax.numpy as jnp
import optax
from flax import nnx
from jax.sharding import NamedSharding, PartitionSpec

from gptjax import lora as lora_lib
from gptjax.chunked_head import model_token_nll
from gptjax.model import Transformer, constrain
from gptjax.optim import make_optimizer
from gptjax.tokenizer.text_lengths import TextLengths

Batch = dict[str, jax.Array]


class TrainState(flax.struct.PyTreeNode):
    step: jax.Array  # updates attempted so far (= batches consumed), int32 scalar
    params: nnx.State
    opt_state: optax.OptState
    bad_steps: jax.Array  # consecutive non-finite steps, reset by a finite one
    skipped_steps: jax.Array  # non-finite steps skipped over the whole run


def new_train_state(
    model_config,
    tx: optax.GradientTransformation,
    seed: int,
    lora=None,
    params: nnx.State | None = None,
) -> TrainState:
    """A freshly initialised state; call it under `sharding.sharded_init` to build it sharded.

    With `lora` (a LoraConfig) the state's params are the adapters alone (A drawn, B zeros);
    the base weights built alongside are dropped (under jit, never computed). With `params` (a
    full finetune's restored weights) only the optimizer state is initialised: tracing and
    compiling the model's random init would cost seconds for weights thrown away.
    """
    if params is None:
        params = nnx.state(Transformer(model_config, rngs=nnx.Rngs(seed), lora=lora))
        if lora is not None:
            params, _ = lora_lib.split_adapters(params)
    zero = jnp.zeros((), jnp.int32)
    return TrainState(zero, params, tx.init(params), zero, zero)


def base_params(model_config):
    """The plain model's parameters (the frozen base of a LoRA run), for `plan_state`."""
    return nnx.state(Transformer(model_config, rngs=nnx.Rngs(0)))


def model_graphdef(model_config, lora=None):
    """The model's static structure, from an abstract build (no arrays are allocated)."""
    build = lambda: Transformer(model_config, rngs=nnx.Rngs(0), lora=lora)
    return nnx.split(nnx.eval_shape(build))[0]


def _frozen(frozen: tuple, params, *, frozen_base: bool, reference_from_base: bool):
    """(base or None, reference or None) from a step's frozen inputs: `(base,)` with LoRA,
    `(reference,)` for DPO with a reference model, `()` otherwise."""
    base = frozen[0] if frozen_base else None
    reference = frozen[0] if frozen and not frozen_base else None
    if reference_from_base:
        reference = lora_lib.adapters_off(params, base)
    return base, reference


def loss_terms(logits_BLV: jax.Array, targets_BL: jax.Array, weights_BL: jax.Array):
    """Sums (not means) of cross-entropy, correct predictions and weights, in float32.

    Sums let gradient accumulation and multi-batch evaluation divide once by the total weight,
    so k micro-batches give exactly the gradient of one big batch.
    """
    logits_BLV = logits_BLV.astype(jnp.float32)
    log_z_BL = jax.nn.logsumexp(logits_BLV, axis=-1)
    target_logit_BL = jnp.take_along_axis(logits_BLV, targets_BL[..., None], axis=-1)[..., 0]
    weights_BL = weights_BL.astype(jnp.float32)
    ce_sum = jnp.sum((log_z_BL - target_logit_BL) * weights_BL)
    # Correct when the target's logit is the row's largest (argmax's answer; a tie for the top
    # counts too). Comparing with the max that logsumexp already reduces saves argmax's own
    # pass over the [B, L, V] logits on every step (docs/benchmarks.md, "What was tried").
    is_top_BL = target_logit_BL >= jnp.max(logits_BLV, axis=-1)
    correct_sum = jnp.sum(is_top_BL * weights_BL)
    return ce_sum, correct_sum, jnp.sum(weights_BL)


# Sums of the text the scored targets spell; the loss is divided by them, not by the weight.
TEXT_SUMS = ("bytes", "chars")


def text_sums(batch: Batch, lengths: TextLengths) -> dict[str, jax.Array]:
    """UTF-8 bytes and characters of the weighted targets (see gptjax.tokenizer.text_lengths).

    A tokenizer that puts a space before every encoded text spelled one byte the document
    does not hold: it comes off each document's first target (the one after `<s>`).
    """
    weights_BL = batch["weights"].astype(jnp.float32)
    bytes_BL = jnp.asarray(lengths.bytes)[batch["targets"]].astype(jnp.float32)
    chars_BL = jnp.asarray(lengths.chars)[batch["targets"]].astype(jnp.float32)
    if lengths.prefix_bytes:
        first_BL = (batch["inputs"] == lengths.bos_id) & (bytes_BL > 0)
        bytes_BL = bytes_BL - lengths.prefix_bytes * first_BL
        chars_BL = chars_BL - lengths.prefix_bytes * first_BL
    return {"bytes": jnp.sum(bytes_BL * weights_BL), "chars": jnp.sum(chars_BL * weights_BL)}


def average_sums(loss_sum, sums: dict, xp=jnp) -> dict:
    """Metrics from an objective's sums (`xp`: jnp in a step, numpy on the host).

    Per-token means divide by the weight; with text sums, the loss also per byte of the text
    (in bits: comparable across tokenizers) and per character (in nats: what char-level
    models such as nanoGPT's shakespeare_char report). NaN when no scored target spells text.
    """
    weight = xp.maximum(sums["weight"], 1.0)
    out = {"loss": loss_sum / weight}
    # A group's sums ("NAME/GROUP", e.g. DPO's per pair kind) divide by the group's own weight
    # ("weight/GROUP", kept as the count it is).
    groups = {name.split("/", 1)[1] for name in sums if name.startswith("weight/")}
    for name, value in sums.items():
        if name == "weight" or name in TEXT_SUMS or name.startswith("weight/"):
            continue
        group = name.split("/", 1)[1] if "/" in name else None
        if group in groups:  # NaN for a group without pairs, not a made-up 0
            count = sums[f"weight/{group}"]
            out[name] = xp.where(count > 0, value / xp.maximum(count, 1.0), math.nan)
        else:
            out[name] = value / weight
    out |= {name: value for name, value in sums.items() if name.startswith("weight/")}
    for name, key, unit in (("bits_per_byte", "bytes", math.log(2)), ("nats_per_char", "chars", 1)):
        if key in sums:
            spelled = sums[key]
            safe = xp.where(spelled > 0, spelled, 1.0)
            out[name] = xp.where(spelled > 0, loss_sum / (unit * safe), math.nan)
    return out


def lm_objective(
    graphdef, params, batch: Batch, dropout_key, reference=None, lengths: TextLengths | None = None
):
    """Next-token cross-entropy on the weighted targets: (ce_sum, sums).

    An objective returns the sum of its loss and a dict of sums that includes "weight", the
    denominator (here trained tokens); every metric is a sum divided once by the total weight
    (`average_sums`). With `lengths` (the tokenizer's bytes and characters per id, bound by
    `gptjax.objectives`) the sums include the text the targets spell, for bits per byte.
    `reference` (another model's parameters) is unused here: DPO's objective needs it.
    """
    model = nnx.merge(graphdef, params)
    if model.config.head_chunk_len:  # the [B, L, V] logits never exist at once
        nll_BL, correct_BL = model_token_nll(model, batch, dropout_key)
        weights_BL = batch["weights"].astype(jnp.float32)
        ce_sum, correct_sum = jnp.sum(nll_BL * weights_BL), jnp.sum(correct_BL * weights_BL)
        weight_sum = jnp.sum(weights_BL)
    else:
        logits = model(
            batch["inputs"],
            segment_ids=batch["segment_ids"],
            positions=batch["positions"],
            dropout_key=dropout_key,
        )
        ce_sum, correct_sum, weight_sum = loss_terms(logits, batch["targets"], batch["weights"])
    sums = {"weight": weight_sum, "accuracy": correct_sum}
    if lengths is not None:
        sums |= text_sums(batch, lengths)
    return ce_sum, sums


# (graphdef, params, batch, dropout_key, reference) -> (loss_sum, sums), as lm_objective.
LossFn = Callable[..., tuple[jax.Array, dict[str, jax.Array]]]


def split_microbatches(batch: Batch, num_micro: int) -> Batch:
    """[B, ...] -> [k, B/k, ...] taking every k-th row, so each micro-batch keeps rows on every
    data-parallel device (a contiguous split would put micro-batch i on a few devices only)."""

    def split(x):
        micro = x.reshape(x.shape[0] // num_micro, num_micro, *x.shape[1:])
        return jnp.swapaxes(micro, 0, 1)

    return jax.tree.map(split, batch)


def gradient_sums(
    graphdef,
    params,
    batch: Batch,
    dropout_key,
    num_micro: int,
    objective: LossFn = lm_objective,
    reference=None,
    base=None,
):
    """(loss_sum, sums, grad of loss_sum), accumulated over `num_micro` micro-batches.

    With `base` (LoRA), `params` are the adapters and only they are differentiated.
    """
    full = (lambda p: p) if base is None else (lambda p: lora_lib.join(p, base))
    grad_fn = jax.value_and_grad(
        lambda p, b, k: objective(graphdef, full(p), b, k, reference), has_aux=True
    )
    if num_micro == 1:
        (loss_sum, sums), grads = grad_fn(params, batch, dropout_key)
        return loss_sum, sums, grads

    def accumulate(carry, xs):
        micro, index = xs
        key = None if dropout_key is None else jax.random.fold_in(dropout_key, index)
        (loss, sums), grads = grad_fn(params, micro, key)
        total_loss, total_sums, total_grads = carry
        return (
            total_loss + loss,
            jax.tree.map(jnp.add, total_sums, sums),
            jax.tree.map(jnp.add, total_grads, grads),
        ), None

    micro_batches = split_microbatches(batch, num_micro)
    first = jax.tree.map(lambda x: x[0], micro_batches)
    _, sums_shape = jax.eval_shape(
        lambda: objective(graphdef, full(params), first, None, reference)
    )
    zeros = jax.tree.map(lambda p: jnp.zeros(p.shape, jnp.float32), params)
    zero_sums = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), sums_shape)
    init = (jnp.float32(0), zero_sums, zeros)
    xs = (micro_batches, jnp.arange(num_micro))
    (loss_sum, sums, grads), _ = jax.lax.scan(accumulate, init, xs)
    return loss_sum, sums, grads


def make_train_step(
    graphdef,
    tx: optax.GradientTransformation,
    schedule: optax.Schedule,
    *,
    seed: int,
    grad_accum_steps: int,
    use_dropout: bool,
    objective: LossFn = lm_objective,
    frozen_base: bool = False,
    reference_from_base: bool = False,
    pin_gradients: bool = False,
) -> Callable[..., tuple[TrainState, dict]]:
    """The pure step `(state, batch, *frozen) -> (state, metrics)`. A step whose loss or
    gradient is not finite is not applied (in-graph). `frozen` is never updated: a reference
    model's parameters for objectives that compare against one (DPO), or with `frozen_base`
    (LoRA) the base weights under the adapters in `state.params` (with `reference_from_base`
    the DPO reference is that base alone).

    `pin_gradients` (with an optimizer state split over `data`, ZeRO-1) constrains each
    gradient to its parameter's own sharding: without it XLA propagates the optimizer
    state's split back into the backward pass (gathering activations between replicas)."""
    base_key = jax.random.key(seed)

    def train_step(state: TrainState, batch: Batch, *frozen):
        key = jax.random.fold_in(base_key, state.step) if use_dropout else None
        base, reference = _frozen(
            frozen, state.params, frozen_base=frozen_base, reference_from_base=reference_from_base
        )
        loss_sum, sums, grad_sums = gradient_sums(
            graphdef, state.params, batch, key, grad_accum_steps, objective, reference, base
        )
        if pin_gradients:
            grad_sums = jax.tree.map(_pin_to_parameter, grad_sums, is_leaf=_is_variable)
        denom = jnp.maximum(sums["weight"], 1.0)
        loss = loss_sum / denom
        grads = jax.tree.map(lambda g: g / denom, grad_sums)
        grad_norm = optax.tree.norm(grads)
        updates, opt_state = tx.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        finite = jnp.isfinite(loss) & jnp.isfinite(grad_norm)
        keep = lambda new, old: jax.tree.map(lambda n, o: jnp.where(finite, n, o), new, old)
        bad = jnp.where(finite, 0, state.bad_steps + 1)
        new_state = TrainState(
            step=state.step + 1,
            params=keep(params, state.params),
            opt_state=keep(opt_state, state.opt_state),
            bad_steps=bad.astype(jnp.int32),
            skipped_steps=state.skipped_steps + (~finite).astype(jnp.int32),
        )
        # The optimizer's count (and so its schedule) only advances on applied updates.
        applied = state.step - state.skipped_steps
        metrics = {
            **average_sums(loss_sum, sums),
            "grad_norm": grad_norm,
            "lr": schedule(applied),
            "weight": sums["weight"],
            "finite": finite,
            "bad_steps": new_state.bad_steps,
        }
        return new_state, metrics

    return train_step


def _is_variable(x) -> bool:
    return isinstance(x, nnx.Variable)


def _pin_to_parameter(grad):
    """A gradient (an nnx Variable carrying its parameter's logical axes) constrained to the
    parameter's sharding under the active mesh and rules."""
    names = grad.get_metadata().get("out_sharding")
    if names is None:
        return grad
    return grad.copy(constrain(grad.get_value(), names))


def state_and_step(
    config, model_config, objective: LossFn = lm_objective, lora=None, reference_from_base=False
):
    """From a config: `create()`, which builds a fresh TrainState (run it under
    `sharding.sharded_init` or `plan_state`), and the pure train step, both with the config's
    optimizer and schedule, seed, gradient accumulation and dropout (and LoRA adapters)."""
    tx, schedule = make_optimizer(config.optim, config.train.steps)
    create = functools.partial(new_train_state, model_config, tx, config.seed, lora)
    step = make_train_step(
        model_graphdef(model_config, lora),
        tx,
        schedule,
        seed=config.seed,
        grad_accum_steps=config.train.grad_accum_steps,
        use_dropout=model_config.dropout_rate > 0,
        objective=objective,
        frozen_base=lora is not None,
        reference_from_base=reference_from_base,
        pin_gradients=config.train.shard_optimizer,
    )
    return create, step


def make_eval_step(
    graphdef,
    objective: LossFn = lm_objective,
    frozen_base: bool = False,
    reference_from_base: bool = False,
) -> Callable[..., dict]:
    """`(params, batch, *frozen) -> {"loss": sum, **sums}`: sums, divided by the caller once
    over all batches. `frozen` as `make_train_step` takes it."""

    def eval_step(params, batch: Batch, *frozen):
        base, reference = _frozen(
            frozen, params, frozen_base=frozen_base, reference_from_base=reference_from_base
        )
        if base is not None:
            params = lora_lib.join(params, base)
        loss_sum, sums = objective(graphdef, params, batch, None, reference)
        return {"loss": loss_sum, **sums}

    return eval_step


def _batch_shardings(mesh):
    return NamedSharding(mesh, PartitionSpec(("data", "fsdp"), None))


def jit_train_step(train_step, state_shardings, mesh, frozen_shardings: tuple = ()):
    """Jitted once with explicit shardings; the old state's buffers are donated to the new one
    (never the frozen inputs': a reference or LoRA base is read by every step)."""
    replicated = NamedSharding(mesh, PartitionSpec())
    in_shardings = (state_shardings, _batch_shardings(mesh), *frozen_shardings)
    return jax.jit(
        train_step,
        in_shardings=in_shardings,
        out_shardings=(state_shardings, replicated),
        donate_argnums=0,
    )


def jit_eval_step(eval_step, params_shardings, mesh, frozen_shardings: tuple = ()):
    replicated = NamedSharding(mesh, PartitionSpec())
    in_shardings = (params_shardings, _batch_shardings(mesh), *frozen_shardings)
    return jax.jit(eval_step, in_shardings=in_shardings, out_shardings=replicated)
