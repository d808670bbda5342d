"""Metrics writers, reader, progress bar and plots."""

import io
import json
import math
import time

import pytest
from small_run import tensorboard_scalars

from gptjax.curves import plot_run
from gptjax.errors import DataError
from gptjax.metrics import MetricsWriter, ProgressBar, read_metrics

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _write_run(workdir, steps=5, with_eval=True):
    with MetricsWriter(workdir) as writer:
        for step in range(1, steps + 1):
            writer.write(step, {"loss": 4.0 / step, "lr": 1e-3 * step, "tokens_per_sec": 600.0})
            if with_eval and step % 2 == 0:
                writer.write(step, {"loss": 5.0 / step}, prefix="eval/")


def test_jsonl_round_trips_with_prefixes(tmp_path):
    _write_run(tmp_path, steps=4)
    records = read_metrics(tmp_path / "metrics.jsonl")
    assert [r["step"] for r in records] == [1, 2, 2, 3, 4, 4]
    assert records[0]["loss"] == 4.0 and records[0]["lr"] == pytest.approx(1e-3)
    assert records[2] == {"step": 2, "time": records[2]["time"], "eval/loss": 2.5}
    assert all(isinstance(r["time"], float) for r in records)


def test_each_write_is_flushed_before_close(tmp_path):
    writer = MetricsWriter(tmp_path)
    writer.write(7, {"loss": 1.5})
    # A run killed now must still have its line on disk.
    assert read_metrics(tmp_path / "metrics.jsonl")[0]["loss"] == 1.5
    writer.close()
    writer.close()


def test_non_finite_values_are_valid_json_and_come_back_distinct(tmp_path):
    with MetricsWriter(tmp_path) as writer:
        writer.write(1, {"nan": float("nan"), "inf": float("inf"), "ninf": -math.inf, "ok": 2.0})
    line = (tmp_path / "metrics.jsonl").read_text().strip()
    strict = json.loads(line, parse_constant=lambda c: pytest.fail(f"non-JSON constant {c}"))
    assert strict["nan"] != strict["inf"] != strict["ninf"]
    record = read_metrics(tmp_path / "metrics.jsonl")[0]
    assert math.isnan(record["nan"])
    assert record["inf"] == math.inf and record["ninf"] == -math.inf and record["ok"] == 2.0


def test_reserved_and_non_numeric_metrics_are_rejected(tmp_path):
    with MetricsWriter(tmp_path) as writer:
        with pytest.raises(ValueError, match="reserved"):
            writer.write(1, {"step": 3.0})
        with pytest.raises(TypeError, match="'loss'"):
            writer.write(1, {"loss": "low"})


def test_disabled_writer_creates_nothing(tmp_path):
    workdir = tmp_path / "run"
    with MetricsWriter(workdir, enabled=False) as writer:
        writer.write(1, {"loss": 1.0})
    assert not workdir.exists()


def test_tensorboard_event_file_holds_the_scalars(tmp_path):
    _write_run(tmp_path, steps=2)
    scalars = tensorboard_scalars(tmp_path / "tensorboard")
    assert scalars[("loss", 2)] == pytest.approx(2.0)
    assert scalars[("eval/loss", 2)] == pytest.approx(2.5)
    assert scalars[("lr", 1)] == pytest.approx(1e-3)


def test_truncated_last_line_is_tolerated(tmp_path):
    _write_run(tmp_path, steps=3, with_eval=False)
    path = tmp_path / "metrics.jsonl"
    with path.open("a") as f:
        f.write('{"step": 4, "lo')
    assert [r["step"] for r in read_metrics(path)] == [1, 2, 3]


def test_resumed_writer_drops_the_fragment_a_kill_left(tmp_path):
    _write_run(tmp_path, steps=2, with_eval=False)
    path = tmp_path / "metrics.jsonl"
    with path.open("a") as f:
        f.write('{"step": 3, "lo')
    with MetricsWriter(tmp_path) as writer:
        writer.write(3, {"loss": 1.0})
    assert [r["step"] for r in read_metrics(path)] == [1, 2, 3]


def test_corrupt_middle_line_names_file_and_line(tmp_path):
    _write_run(tmp_path, steps=3, with_eval=False)
    path = tmp_path / "metrics.jsonl"
    lines = path.read_text().splitlines(keepends=True)
    lines[1] = '{"step": 2, "loss": oops}\n'
    path.write_text("".join(lines))
    with pytest.raises(DataError, match=r"metrics\.jsonl line 2 "):
        read_metrics(path)


def test_missing_metrics_file_raises_data_error(tmp_path):
    with pytest.raises(DataError, match="nothere.jsonl"):
        read_metrics(tmp_path / "nothere.jsonl")


@pytest.mark.parametrize("with_eval", [True, False])
def test_plot_run_writes_png(tmp_path, with_eval):
    _write_run(tmp_path, steps=6, with_eval=with_eval)
    out = plot_run(tmp_path)
    assert out == tmp_path / "curves.png"
    data = out.read_bytes()
    assert data.startswith(PNG_MAGIC) and len(data) > 1000


def test_plot_run_to_custom_path_with_non_finite_loss(tmp_path):
    with MetricsWriter(tmp_path) as writer:
        writer.write(1, {"loss": 3.0})
        writer.write(2, {"loss": float("nan")})
    out = plot_run(tmp_path, tmp_path / "plots" / "x.png")
    assert out.read_bytes().startswith(PNG_MAGIC)


def test_plot_run_without_metrics_raises_data_error(tmp_path):
    with pytest.raises(DataError, match="metrics.jsonl"):
        plot_run(tmp_path)


def test_disabled_progress_bar_writes_nothing():
    out = io.StringIO()
    bar = ProgressBar(10, enabled=False, file=out)
    bar.update(5, loss=1.0)
    bar.close()
    assert out.getvalue() == ""


def test_progress_bar_takes_absolute_steps_and_shows_fields():
    out = io.StringIO()
    with ProgressBar(100, initial_step=10, file=out, log_interval_s=0) as bar:
        bar.update(40, loss=2.3134, lr=3e-5, **{"tok/s": 650.0})
        assert bar.step == 40
        bar.update(100, loss=2.0)
    text = out.getvalue()
    assert "\r" not in text  # StringIO is not a TTY: one line per refresh, for logs
    lines = text.splitlines()
    assert lines[0].startswith("train:") and "10/100" in lines[0]
    assert any("40/100" in line and "loss=2.313 lr=3e-05 tok/s=650" in line for line in lines)
    assert "100/100" in lines[-1] and "loss=2" in lines[-1]


def test_progress_bar_is_quiet_between_log_intervals_when_not_a_tty():
    out = io.StringIO()
    with ProgressBar(1000, file=out, log_interval_s=3600) as bar:
        for step in range(1, 1001):
            bar.update(step, loss=1.0)
    # The opening line and the closing line, not one per step.
    assert len(out.getvalue().splitlines()) == 2


def test_progress_bar_still_reports_when_steps_slow_down():
    out = io.StringIO()
    bar = ProgressBar(10**9, file=out, log_interval_s=0.05)
    step, start = 0, time.monotonic()
    while time.monotonic() - start < 0.3:  # fast steps: tqdm's default learns to skip checks
        step += 1
        bar.update(step)
    time.sleep(0.1)  # then one slow step, as at an eval or a checkpoint
    bar.update(step + 1)
    assert f"{step + 1}/1000000000" in out.getvalue()
    bar.close()
