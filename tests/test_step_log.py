"""Every logged window's tokens/s and MFU, against a hand computation on a scripted clock.

The loop below calls StepLog in the order `gptjax.train.loop._loop` does (before_dispatch,
dispatch, next batch, record of the previous step; record and flush at an evaluation), with
steps that either run inside the dispatch (synchronous, as XLA:CPU often does) or on a device
queue (asynchronous, as on TPU/GPU).
"""

from types import SimpleNamespace

import pytest

from gptjax.train import step_log as step_log_module
from gptjax.train.step_log import StepLog

TOKENS_PER_STEP = 8 * 16  # global_batch_size x seq_len below
FLOPS_PER_TOKEN, PEAK = 1000.0, 1e6
STEP_SEC, INPUT_SEC, EVAL_SEC, SAVE_SEC = 1.0, 0.25, 5.0, 3.0


class Clock:
    def __init__(self):
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


class DeviceMetrics:
    """A step's metrics, computed at `ready_at` on the scripted clock."""

    def __init__(self, clock: Clock, ready_at: float):
        self.clock, self.ready_at = clock, ready_at

    def is_ready(self) -> bool:
        return self.clock.now >= self.ready_at

    def fetch(self) -> dict:
        self.clock.now = max(self.clock.now, self.ready_at)  # blocks until computed
        return {"loss": 2.0, "lr": 1e-3, "weight": 1.0, "finite": True, "bad_steps": 0}


class Writer:
    def __init__(self):
        self.lines = {}

    def write(self, step, values, prefix=""):
        self.lines[step] = values

    def update(self, *args, **kwargs): ...


def _run(log_every: int):
    train = SimpleNamespace(global_batch_size=8, log_every=log_every, max_bad_steps=3)
    return SimpleNamespace(
        config=SimpleNamespace(train=train, data=SimpleNamespace(seq_len=16)),
        objective=SimpleNamespace(has_perplexity=False),
        model_flops_per_token=FLOPS_PER_TOKEN,
    )


def _train(
    monkeypatch, *, steps: int, log_every: int, eval_every: int, sync: bool, save_at=()
) -> dict:
    """The windows written (step -> metrics) by a scripted run of `steps` steps, saving a
    checkpoint (SAVE_SEC) after the steps in `save_at`."""
    clock = Clock()
    monkeypatch.setattr(step_log_module.time, "perf_counter", clock)
    monkeypatch.setattr(step_log_module.jax, "device_get", lambda metrics: metrics.fetch())
    monkeypatch.setattr(step_log_module.jax, "block_until_ready", lambda m: m.fetch())
    writer = Writer()
    step_log = StepLog(_run(log_every), writer, writer, PEAK, lambda line: None)
    clock.now += 30.0  # compiling the step: not training time
    step_log.restart()
    pending, device_free = None, clock.now
    for step in range(steps):
        step_log.before_dispatch(pending)
        device_free = max(clock.now, device_free) + STEP_SEC
        metrics = DeviceMetrics(clock, device_free)
        clock.now = device_free if sync else clock.now + 0.001  # the dispatch
        done = step + 1
        last = done == steps
        if done in save_at:  # as loop._save: waits for the state, then writes
            step_log.finish_before_save(pending, (step, metrics))
            start = clock.now = max(clock.now, device_free)
            clock.now += SAVE_SEC
            step_log.exclude(start, clock.now)
        wait = 0.0 if last else INPUT_SEC
        clock.now += wait  # the next batch, while the device works
        if pending is not None:
            step_log.record(*pending)
        pending = (step, metrics, wait)
        if done % eval_every == 0 or last:
            step_log.record(*pending)
            pending = None
            step_log.flush(done)
            clock.now += EVAL_SEC
            step_log.restart()
    return writer.lines


def _tokens_per_sec(lines: dict) -> dict:
    return {step: round(values["tokens_per_sec"], 6) for step, values in lines.items()}


def test_a_last_window_of_one_step_after_synchronous_steps_is_timed_by_that_step(monkeypatch):
    lines = _train(monkeypatch, steps=9, log_every=4, eval_every=100, sync=True)
    # Each step: 1 s in the dispatch + 0.25 s taking the next batch; the last takes no batch.
    assert _tokens_per_sec(lines) == {4: 4 * 128 / 5.0, 8: 4 * 128 / 5.0, 9: 128 / 1.0}
    assert lines[4]["input_wait_fraction"] == pytest.approx(4 * INPUT_SEC / 5.0)
    assert lines[9]["mfu"] == pytest.approx(128 / 1.0 * FLOPS_PER_TOKEN / PEAK)
    assert lines[9]["step_time_sec"] == pytest.approx(1.0)


def test_the_window_after_an_evaluation_excludes_it(monkeypatch):
    lines = _train(monkeypatch, steps=12, log_every=4, eval_every=8, sync=True)
    # After the evaluation: 4 steps of 1 s and 3 batches of 0.25 s (none after the last).
    expected = {4: 4 * 128 / 5.0, 8: 4 * 128 / 5.0, 12: 4 * 128 / 4.75}
    assert _tokens_per_sec(lines) == pytest.approx(expected)


@pytest.mark.parametrize("steps,eval_every", [(9, 100), (12, 8)])
def test_asynchronous_steps_give_the_device_rate_in_every_window(monkeypatch, steps, eval_every):
    lines = _train(monkeypatch, steps=steps, log_every=4, eval_every=eval_every, sync=False)
    # Batches (0.25 s) overlap the running step (1 s): the device sets the pace.
    assert _tokens_per_sec(lines) == pytest.approx({s: 128 / STEP_SEC for s in lines})


def test_checkpoint_saves_are_left_out_of_the_window_they_block(monkeypatch):
    kwargs = dict(steps=12, log_every=4, eval_every=8)
    plain = _train(monkeypatch, **kwargs, sync=True)
    assert _tokens_per_sec(_train(monkeypatch, **kwargs, sync=True, save_at=(6, 12))) == (
        pytest.approx(_tokens_per_sec(plain))
    )
    saving = _train(monkeypatch, **kwargs, sync=False, save_at=(6, 12))
    # Asynchronous: the save after step 6 waits for it, so the next batch (0.25 s) is taken
    # while the device is idle instead of during a step: steps 5-8 take 4.25 s.
    assert _tokens_per_sec(saving) == pytest.approx({4: 128.0, 8: 4 * 128 / 4.25, 12: 128.0})
