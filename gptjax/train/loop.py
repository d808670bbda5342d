"""The training loop: validate, build sharded state, compile once, train, evaluate, sample.

The loop never stalls the device: the metrics of step N are fetched after step N+1 has been
dispatched, and non-finite steps are gated inside the step (see `gptjax.steps`).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import time

import jax
import numpy as np
from etils import epath
from flax.core import spmd as flax_spmd

from gptjax import lora as lora_lib
from gptjax import sharding
from gptjax.chat_template import completion_text, format_completion, prompt_ids
from gptjax.checkpoint import Checkpointer
from gptjax.checkpoint.merged import restore_base
from gptjax.config import validate, validate_static
from gptjax.data.run_data import RunData, prepare_run_data
from gptjax.data.shard_verify import verify_once
from gptjax.errors import GptjaxError, Preempted
from gptjax.generation import generate
from gptjax.metrics import MetricsWriter, ProgressBar
from gptjax.model import count_params, flops_per_token
from gptjax.objectives import Objective, objective_for
from gptjax.paths import PathLike
from gptjax.steps import (
    TrainState,
    average_sums,
    base_params,
    jit_eval_step,
    jit_train_step,
    make_eval_step,
    model_graphdef,
    state_and_step,
)
from gptjax.train import multihost, resume
from gptjax.train.architecture import adopt_architecture, starting_model
from gptjax.train.memory_report import refuse_what_cannot_run
from gptjax.train.peak import total_peak_flops
from gptjax.train.reference import precompute, reference_point, restore_reference
from gptjax.train.runtime import ClusterSpec, describe_runtime, initialize_runtime
from gptjax.train.save_schedule import SaveSchedule
from gptjax.train.step_log import StepLog
from gptjax.train.wandb_run import open_wandb_run, refuse_missing_wandb
from gptjax.train.workdir_lock import fresh_workdir, hold_workdir, writable_workdir

SAMPLES_FILE = "samples.jsonl"


@dataclasses.dataclass
class Run:
    """What the loop needs, built once: mesh, compiled steps, state, data."""

    config: object
    mesh: jax.sharding.Mesh
    mesh_layout: sharding.MeshLayout  # the mesh as requested: per-slice sizes and slices
    graphdef: object
    state: TrainState
    shardings: TrainState
    train_step: object
    eval_step: object
    data: RunData
    checkpointer: Checkpointer
    checkpoint_metadata: dict
    eval_batches: list  # held-out batches, built once (numpy, full global batches)
    model_config: object
    model_flops_per_token: float
    objective: Objective
    # The steps' frozen inputs: (LoRA base params,) with LoRA, else (reference params,) for
    # DPO with dpo.reference="model", else ().
    frozen: tuple = ()
    lora: lora_lib.LoraConfig | None = None


def build(config, workdir: epath.Path, log=print) -> Run:
    """Validates the config, prepares data, and restores or initialises the sharded state.

    A failure after the Checkpointer opens closes it first, so Orbax's threads do not outlive
    the error (they would print tracebacks at interpreter shutdown, after gptjax's line).
    """
    derived = validate(config, jax.device_count(), jax.process_count(), jax.local_device_count())
    workdir.mkdir(parents=True, exist_ok=True)
    checkpointer = Checkpointer(
        workdir,
        keep_last=config.checkpoint.keep_last,
        keep_every=config.checkpoint.keep_every,
        async_save=config.checkpoint.async_save,
    )
    try:
        return _build(config, workdir, derived, checkpointer, log)
    except BaseException:
        checkpointer.close()
        raise


def _build(config, workdir: epath.Path, derived: dict, checkpointer: Checkpointer, log) -> Run:
    model_config = derived["model"]
    start = resume.find_start(config, workdir, checkpointer)
    objective = objective_for(config.phase, config.dpo)
    if objective.needs_reference:
        reference_point(start, checkpointer)  # refuses a DPO run with nothing to start from
    resume.install_start_tokenizer(start, workdir)  # process 0 writes, the others wait

    def prepare() -> RunData:
        return prepare_run_data(config.data, model_config.vocab_size, workdir, log)

    if config.data.source == "prepared":
        # Writes nothing, so every host opens it at once (each copying a bucket's shards to
        # its own disk in parallel, not waiting for process 0's copy first).
        data = multihost.on_every_process(prepare, "opening the prepared data")
    else:  # trains a tokenizer and writes caches into a shared workdir: once, by process 0
        data = multihost.primary_first(prepare, "preparing the data")
    if data.prepared is not None:  # every process: the shards are hashed once, split across them
        verify_once(
            data.prepared,
            workdir,
            verify=config.data.verify_shards,
            log=log,
            processes=multihost.processes(),
        )
    data_hash = _data_hash(data)
    multihost.check_same_data(data.tokenizer.sha256, data_hash)
    objective = objective.for_tokenizer(data.tokenizer).for_pair_kinds(data.pair_kinds)
    _log_validation_set(config, data, log)
    resume.check_tokenizer(start, data.tokenizer)
    mesh = sharding.make_mesh(config.mesh.to_dict())
    rules = tuple(config.sharding_rules)
    lora = derived["lora"]
    # With LoRA, DPO's reference model is the frozen base itself with the adapters off.
    reference_from_base = (
        lora is not None and objective.needs_reference and config.dpo.reference == "model"
    )
    graphdef = model_graphdef(model_config, lora)
    frozen, frozen_shardings, metadata = (), (), {}
    create, step_fn = state_and_step(
        config, model_config, objective.loss, lora, reference_from_base
    )
    with jax.set_mesh(mesh), flax_spmd.logical_axis_rules(rules):
        target, shardings = sharding.plan_state(
            create, mesh, rules, shard_optimizer=config.train.shard_optimizer
        )
        # A full DPO from init_from keeps the restored weights: they are also its reference.
        keep = objective.needs_reference and lora is None
        state, start_params = resume.restore_start(
            start, target, create, shardings, model_config, log, lora, keep_params=keep
        )
        resume.set_aside_newer(start, checkpointer, log)  # before this run's first save
        if lora is not None:
            metadata["lora"] = record = resume.lora_start_record(start, checkpointer, lora)
            base_target, base_shardings = sharding.plan_state(
                lambda: base_params(model_config), mesh, rules
            )
            frozen, frozen_shardings = (restore_base(record, base_target),), (base_shardings,)
            log(_describe_lora(lora, record, model_config))
        if objective.needs_reference:
            metadata["reference"] = point = reference_point(start, checkpointer)
            if lora is not None:
                log("reference model: the LoRA base (adapters off, no second copy)")
                reference = frozen[0]
            else:
                reference = restore_reference(point, target.params, log, start_params)
                frozen, frozen_shardings = (reference,), (shardings.params,)
            if config.dpo.reference == "precomputed":
                plain = model_graphdef(model_config)
                data = _precompute_reference(config, plain, reference, data, mesh, log)
                if lora is None:  # its log-probabilities ride in the batches instead
                    frozen, frozen_shardings = (), ()
    table = sharding.sharding_table(state.params, shardings.params)
    if jax.process_index() == 0:
        lines = [f"{path} {shape} -> {spec}" for path, shape, spec in table]
        (workdir / "sharding.txt").write_text("\n".join(lines) + "\n")
    split = sum(sharding.is_split(spec) for _, _, spec in table)
    log(
        f"sharding: {split} of {len(table)} parameter arrays split over the mesh "
        f"(table in {workdir / 'sharding.txt'})"
    )
    eval_fn = make_eval_step(graphdef, objective.loss, lora is not None, reference_from_base)
    return Run(
        config=config,
        mesh=mesh,
        mesh_layout=derived["mesh_layout"],
        graphdef=graphdef,
        state=state,
        shardings=shardings,
        train_step=jit_train_step(step_fn, shardings, mesh, frozen_shardings),
        eval_step=jit_eval_step(eval_fn, shardings.params, mesh, frozen_shardings),
        data=data,
        checkpointer=checkpointer,
        checkpoint_metadata=resume.checkpoint_metadata(
            config, model_config, mesh, data.tokenizer, data_hash
        )
        | metadata,
        eval_batches=_eval_batches(config, data),
        model_config=model_config,
        model_flops_per_token=flops_per_token(model_config, config.data.seq_len),
        objective=objective,
        frozen=frozen,
        lora=lora,
    )


def _describe_lora(lora, record: dict, model_config) -> str:
    trained = lora_lib.count(lora, model_config)
    base = record["base"]
    return (
        f"LoRA rank {lora.rank}, alpha {lora.alpha:g} on {','.join(lora.targets)}: "
        f"{trained:,} trained parameters ({trained / count_params(model_config):.2%} of the "
        f"model) over the frozen base {base['workdir']} step {base['step']}"
    )


def _precompute_reference(config, graphdef, params, data: RunData, mesh, log) -> RunData:
    batch_size = config.train.eval_batch_size
    train, valid = (
        precompute(graphdef, params, rows, batch_size=batch_size, mesh=mesh, log=log)
        for rows in (data.train_rows, data.valid_rows)
    )
    return dataclasses.replace(data, train_rows=train, valid_rows=valid)


def _data_hash(data: RunData) -> str:
    """Identifies the training tokens: the prepared manifest (it holds every shard's sha256),
    or the built-in stream or packed conversations themselves (small, in memory)."""
    if data.manifest is not None:
        return hashlib.sha256(json.dumps(data.manifest, sort_keys=True).encode()).hexdigest()
    return data.train_rows.sha256()


def _log_validation_set(config, data: RunData, log) -> None:
    """Which held-out set the run evaluates on, and how much of it each evaluation reads."""
    rows = data.valid_rows.num_rows
    per_eval = min(rows, config.train.eval_batches * config.train.eval_batch_size)
    log(
        f"validation set: {data.valid_source}; each evaluation scores {per_eval:,} of its "
        f"{rows:,} rows of {config.data.seq_len} tokens"
        + ("" if per_eval == rows else " (train.eval_batches x train.eval_batch_size)")
    )


def _process_rows(batch: dict, rows: int) -> dict:
    """This process's contiguous slice of a global (eval) batch."""
    start = jax.process_index() * rows
    return {k: v[start : start + rows] for k, v in batch.items()}


def _eval_batches(config, data: RunData) -> list[dict]:
    from gptjax.data.pipeline import eval_batches

    return eval_batches(
        data.valid_rows,
        batch_size=config.train.eval_batch_size,
        max_batches=config.train.eval_batches,
    )


def evaluate(run: Run) -> dict[str, float]:
    """The objective's mean loss and metrics over the held-out batches (plus perplexity for
    next-token objectives; bits per byte and nats per character where the loss is on text)."""
    cfg = run.config
    rows = cfg.train.eval_batch_size // jax.process_count()
    totals: dict[str, float] = {}
    with jax.set_mesh(run.mesh), flax_spmd.logical_axis_rules(tuple(cfg.sharding_rules)):
        for batch in run.eval_batches:
            global_batch = sharding.global_batch_from_local(_process_rows(batch, rows), run.mesh)
            out = jax.device_get(run.eval_step(run.state.params, global_batch, *run.frozen))
            for name, value in out.items():
                totals[name] = totals.get(name, 0.0) + float(value)
    loss_sum = totals.pop("loss")
    result = {name: float(value) for name, value in average_sums(loss_sum, totals, np).items()}
    if run.objective.has_perplexity:
        result["perplexity"] = float(np.exp(min(result["loss"], 50.0)))
    return result


def _evaluate_and_log(run: Run, step: int, writer: MetricsWriter, log) -> dict[str, float]:
    evaluation = evaluate(run)
    writer.write(step, evaluation, prefix="eval/")
    details = run.objective.eval_details(evaluation)
    log(f"step {step}: validation loss {evaluation['loss']:.3f} ({details})")
    return evaluation


def sample(run: Run, prompts, *, max_new_tokens: int, temperature: float, top_k: int) -> list[str]:
    """Completions of `prompts` with the current params, formatted as `gptjax sample` prints
    them: a chat phase (sft/dpo) asks each prompt as a user turn through the chat template and
    stops at the end of the turn; pretraining continues the text."""
    tok, chat = run.data.tokenizer, run.objective.chat
    ids, stops = prompt_ids(tok, prompts, chat=chat)
    params = run.state.params
    if run.lora is not None:  # the adapters over their base
        params = lora_lib.join(params, run.frozen[0])
    with jax.set_mesh(run.mesh), flax_spmd.logical_axis_rules(tuple(run.config.sharding_rules)):
        outputs = generate(
            run.graphdef,
            params,
            ids,
            max_new_tokens=max_new_tokens,
            temperature=temperature,
            top_k=top_k,
            top_p=1.0,
            seed=run.config.seed,
            stop_ids=stops,
        )
    return [
        format_completion(p, completion_text(tok, i, out, chat=chat), chat=chat)
        for p, i, out in zip(prompts, ids, outputs, strict=True)
    ]


def _without_blank_lines(text: str) -> str:
    """A sample as the log shows it: an early model emits runs of newlines that would push the
    progress bar off the screen, so blank lines are dropped (samples.jsonl keeps the text)."""
    return "\n".join(line for line in text.splitlines() if line.strip())


def _log_samples(run: Run, step: int, log) -> None:
    """The config's fixed prompts, sampled at every evaluation: printed and kept in
    WORKDIR/samples.jsonl, so a run's progress can be read as text, not only as a loss."""
    cfg = run.config.sample
    if not (cfg.prompts and cfg.max_new_tokens):
        return
    texts = sample(
        run,
        list(cfg.prompts),
        max_new_tokens=cfg.max_new_tokens,
        temperature=cfg.temperature,
        top_k=cfg.top_k,
    )
    log("\n".join(_without_blank_lines(t) for t in texts))
    if jax.process_index() == 0:
        with (run.checkpointer.directory.parent / SAMPLES_FILE).open("a", encoding="utf-8") as f:
            for prompt, text in zip(cfg.prompts, texts, strict=True):
                f.write(json.dumps({"step": step, "prompt": prompt, "sample": text}) + "\n")


def train(
    config,
    workdir: PathLike,
    log=print,
    cluster: ClusterSpec | None = None,
    on_purpose: dict[str, str] | None = None,
) -> dict:
    """Trains `config` in `workdir`; returns the final summary (also written to metrics).

    Returns only once the final checkpoint has committed. Raises Preempted (exit 75) after
    committing a checkpoint when the process was told to stop (SIGTERM). `cluster` names the
    processes of a multi-process run (default: a TPU slice is detected, else one process);
    there each process prints its start-up line, then only process 0 logs.

    With `on_purpose` (the fields set on purpose, `gptjax.config.load_config_with_origins`;
    the CLI passes them) a finetune adopts its starting checkpoint's architecture
    (`gptjax.train.architecture`); without, the config must match it.

    Refused with ConfigError (exit 2) before anything is allocated: a workdir that is a file
    or cannot be written, one held by another run (`workdir_lock`), a run whose state cannot
    fit in the devices' memory (`memory_report.refuse_what_cannot_fit`).

    A run that fails before its first checkpoint commits removes the workdir again if it
    created it (`fresh_workdir`); a workdir that existed before is left as it was.
    """
    validate_static(config)  # config errors first, before the runtime prints anything
    refuse_missing_wandb(config)
    with fresh_workdir(workdir):
        workdir = writable_workdir(workdir)  # a file or an unwritable path: exit 2 at once
        return _train_in(config, workdir, log, cluster, on_purpose)


def _train_in(config, workdir: epath.Path, log, cluster, on_purpose) -> dict:
    initialize_runtime(log, cluster)  # before anything touches a device
    if on_purpose is not None:
        start = starting_model(config, workdir)  # reads checkpoint metadata: after the runtime
        if start is not None:
            adopt_architecture(config, *start, on_purpose, multihost.primary_log(log))
            validate_static(config)
    if jax.process_count() > 1:  # each host shows it joined (one process: the mesh line says it)
        log(describe_runtime())
    log = multihost.primary_log(log)
    multihost.check_same_config(config, workdir)
    # The mesh, the batch split and memory, before any data is prepared or array allocated.
    multihost.on_every_process(lambda: refuse_what_cannot_run(config), "checking the config")
    with hold_workdir(workdir, "train"):  # one run per workdir, released when this one ends
        return _train_holding_workdir(config, workdir, log)


def _train_holding_workdir(config, workdir: epath.Path, log) -> dict:
    primary = multihost.is_primary()
    wandb_run = multihost.primary_only(
        lambda: open_wandb_run(config, workdir, log), "starting the Weights & Biases run"
    )
    writer = MetricsWriter(workdir, enabled=primary, sinks=[wandb_run] if wandb_run else [])
    exit_code = 1  # how the run ended, for W&B: a GptjaxError's code, else 1
    try:
        summary = _build_and_train(config, workdir, writer, log)
        exit_code = 0
        return summary
    except GptjaxError as error:
        exit_code = error.exit_code
        raise
    finally:
        writer.close(exit_code)


def _build_and_train(config, workdir: epath.Path, writer: MetricsWriter, log) -> dict:
    run = build(config, workdir, log)
    peak, peak_source = total_peak_flops(jax.devices(), run.model_config.dtype)
    log(
        f"model: {count_params(run.model_config):,} parameters · mesh {dict(run.mesh.shape)}"
        f"{run.mesh_layout.dcn_note()} · "
        f"{run.data.train_rows.size:,} train tokens · peak {peak / 1e9:.0f} GFLOP/s "
        f"({peak_source})"
    )
    bar = ProgressBar(config.train.steps, int(run.state.step), enabled=multihost.is_primary())
    log = bar.log_through(log)  # validation lines and samples never share the bar's line
    try:
        with jax.set_mesh(run.mesh), flax_spmd.logical_axis_rules(tuple(config.sharding_rules)):
            return _loop(run, StepLog(run, writer, bar, peak, log), log)
    finally:
        bar.close()
        run.checkpointer.close()  # waits for the last save; a failed one raises (exit 74)


def _save(run: Run, state: TrainState, saves, step_log: StepLog, *, force: bool) -> None:
    tokenizer_bytes = run.data.tokenizer.model_bytes
    start = time.perf_counter()
    blocked = run.checkpointer.save(state, run.checkpoint_metadata, tokenizer_bytes, force=force)
    step_log.exclude(start, time.perf_counter())  # not training time
    saves.saved(int(state.step))
    step_log.writer.write(int(state.step), {"checkpoint_block_sec": blocked})


def train_batches(config, data: RunData, start_step: int):
    """This process's numpy batches for steps start_step, start_step+1, ..."""
    from gptjax.data.pipeline import train_dataset

    dataset = train_dataset(
        data.train_rows,
        global_batch=config.train.global_batch_size,
        seed=config.seed,
        start_step=start_step,
        process_index=jax.process_index(),
        process_count=jax.process_count(),
    )
    return dataset.as_numpy_iterator()


def _loop(run: Run, step_log: StepLog, log) -> dict:
    cfg = run.config
    if int(run.state.step) >= cfg.train.steps:
        log(f"nothing to train: checkpoint step {int(run.state.step)} >= {cfg.train.steps} steps")
        return {
            "steps": cfg.train.steps,
            "eval": evaluate(run),
            "train": {},
            "compile_sec": 0.0,
            "unigram_entropy": run.data.unigram_entropy,
            "run": run,
        }
    pipeline_start = time.perf_counter()
    batches = train_batches(cfg, run.data, int(run.state.step))
    next_local = next(batches)
    example = sharding.global_batch_from_local(next_local, run.mesh)
    compile_start = time.perf_counter()
    compiled = run.train_step.lower(run.state, example, *run.frozen).compile()
    compile_sec = time.perf_counter() - compile_start
    # The input pipeline's start (tf.data graph, first batch) is timed apart: it is not XLA's.
    log(
        f"compiled the train step in {compile_sec:.1f}s (input pipeline's first batch in "
        f"{compile_start - pipeline_start:.1f}s)"
    )
    step_log.writer.write(int(run.state.step), {"compile_sec": compile_sec})
    saves = SaveSchedule(cfg.checkpoint, cfg.train.steps, int(run.state.step))
    # The starting model's figures, for contrast: always when finetuning, else if asked.
    start_evaluation = None
    if int(run.state.step) == 0 and (cfg.init_from or cfg.train.eval_at_start):
        start_evaluation = _evaluate_and_log(run, 0, step_log.writer, log)
    state, pending, evaluation = run.state, None, {}
    step_log.restart()  # compiling and the starting evaluation are not training time
    for step in range(int(run.state.step), cfg.train.steps):
        batch = sharding.global_batch_from_local(next_local, run.mesh)
        step_log.before_dispatch(pending)
        state, metrics = compiled(state, batch, *run.frozen)
        done = step + 1
        last = done == cfg.train.steps
        preempted = run.checkpointer.reached_preemption(done)
        due = saves.due(done)  # every step, every process: it may share process 0's plan
        if preempted or due:  # before the next step donates this state's buffers
            step_log.finish_before_save(pending, (step, metrics))
            _save(run, state, saves, step_log, force=preempted)
        run.checkpointer.check(done)  # a failed save stops the run now, not at the next save
        wait_start = time.perf_counter()
        if not (last or preempted):  # fetch the next batch while the device works
            next_local = next(batches)
        input_wait = time.perf_counter() - wait_start
        if pending is not None:  # step N's metrics are read once step N+1 is queued
            step_log.record(*pending)
        pending = (step, metrics, input_wait)
        if preempted:
            step_log.record(*pending)
            step_log.flush(done)
            run.checkpointer.wait()
            raise Preempted(
                f"preempted: checkpoint {done} committed in {run.checkpointer.directory}; "
                "run the same command again to resume"
            )
        if done % cfg.train.eval_every == 0 or last:
            step_log.record(*pending)
            pending = None
            step_log.flush(done)
            run.state = state
            evaluation = _evaluate_and_log(run, done, step_log.writer, log)
            _log_samples(run, done, log)
            step_log.restart()
    run.state = state
    return {
        "steps": cfg.train.steps,
        "eval": evaluation,
        "train": step_log.final_summary(),
        "start_eval": start_evaluation,  # the starting model's, for the summary line
        "compile_sec": compile_sec,
        "unigram_entropy": run.data.unigram_entropy,
        "run": run,
    }
