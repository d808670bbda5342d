"""`gptjax plot`: every metric family a run logged, one panel each, several runs overlaid.

The figures are inspected as matplotlib objects (panels, lines, legends), not as pixels. The
fixtures are the metrics.jsonl of two real runs on 2 CPU devices, a 2x64 model with a
512-piece tokenizer (tests/small_run.py's SMALL_MODEL and SMALL_VOCAB):
- `pretrain.jsonl`: `gptjax train --config configs/tiny.py --config.train.steps=30
  --config.train.eval_every=10 --config.train.log_every=5 ...`
- `dpo.jsonl`: `gptjax train --config configs/tiny_dpo.py --config.init_from=SFT_WORKDIR
  --config.train.steps=20 --config.train.eval_every=10 --config.train.log_every=5 ...`,
  SFT_WORKDIR a 20-step configs/tiny_sft.py run from the pretraining one.
"""

import json
import shutil
from pathlib import Path

import pytest

from gptjax.curves import FAMILIES, curves_figure, plot_runs
from gptjax.errors import ConfigError, DataError

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = ROOT / "tests" / "fixtures" / "metrics"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _workdir(tmp_path: Path, name: str, fixture: str) -> Path:
    workdir = tmp_path / name
    workdir.mkdir()
    shutil.copy(FIXTURES / fixture, workdir / "metrics.jsonl")
    return workdir


def _panels(fig) -> dict:
    """{panel title: [(line label, number of points), ...]} of the visible panels."""
    return {
        ax.get_title(): [(line.get_label(), len(line.get_xdata())) for line in ax.get_lines()]
        for ax in fig.axes
        if ax.get_visible()
    }


def test_a_dpo_run_gets_its_reward_panels(tmp_path):
    panels = _panels(curves_figure([_workdir(tmp_path, "dpo", "dpo.jsonl")]))
    rewards = [label for label, _ in panels["DPO rewards"]]
    assert rewards == [
        "chosen_reward", "eval/chosen_reward", "rejected_reward", "eval/rejected_reward",
        "reward_margin", "eval/reward_margin",
    ]  # fmt: skip
    assert [label for label, _ in panels["DPO accuracy"]] == [
        "reward_accuracy", "eval/reward_accuracy", "likelihood_accuracy",
        "eval/likelihood_accuracy",
    ]  # fmt: skip
    # 20 steps logged every 5; evaluated at 0 (a finetuning run starts with one), 10 and 20.
    assert dict(panels["loss"]) == {"loss": 4, "eval/loss": 3}
    for title in ("learning rate", "throughput", "DPO KL to the reference", "compile time"):
        assert title in panels
    # A DPO run has no per-token figures of text: those panels are not drawn empty.
    assert "perplexity" not in panels and "bits per byte" not in panels


def test_every_logged_metric_is_drawn_somewhere(tmp_path):
    workdir = _workdir(tmp_path, "pretrain", "pretrain.jsonl")
    with (workdir / "metrics.jsonl").open("a") as f:  # a metric no family names
        f.write(json.dumps({"step": 31, "time": 0.0, "eval/my_probe": 1.5}) + "\n")
    logged = set()
    for line in (workdir / "metrics.jsonl").read_text().splitlines():
        logged.update(json.loads(line))
    drawn = {label for lines in _panels(curves_figure([workdir])).values() for label, _ in lines}
    assert drawn == logged - {"step", "time"}
    assert "my probe" in _panels(curves_figure([workdir]))


def test_two_runs_give_two_lines_per_metric_in_every_panel(tmp_path):
    a = _workdir(tmp_path, "a", "pretrain.jsonl")
    b = _workdir(tmp_path, "b", "dpo.jsonl")
    fig = curves_figure([a, b])
    panels = _panels(fig)
    shared = {f.title for f in FAMILIES} & set(panels)
    assert {"loss", "learning rate", "throughput", "DPO rewards"} <= shared
    for title in ("learning rate", "throughput", "gradient norm", "MFU"):
        assert sorted(label for label, _ in panels[title]) == [
            f"a {metric}" for metric in _metrics(title)
        ] + [f"b {metric}" for metric in _metrics(title)]
    assert sorted(label for label, _ in panels["loss"]) == [
        "a eval/loss", "a loss", "b eval/loss", "b loss",
    ]  # fmt: skip
    # Only the DPO run logged rewards: its lines alone, still named after it.
    assert all(label.startswith("b ") for label, _ in panels["DPO rewards"])
    for ax in fig.axes:
        if ax.get_visible():
            legend = [t.get_text() for t in ax.get_legend().get_texts()]
            assert legend == [line.get_label() for line in ax.get_lines()]
            colors = {line.get_label().split()[0]: line.get_color() for line in ax.get_lines()}
            assert len(set(colors.values())) == len(colors)  # one colour per run
    assert fig.get_suptitle() == "a vs b"


def _metrics(title: str) -> list[str]:
    (family,) = [f for f in FAMILIES if f.title == title]
    return list(family.metrics)


def test_runs_with_the_same_folder_name_are_named_by_path(tmp_path):
    (tmp_path / "x").mkdir()
    (tmp_path / "y").mkdir()
    first = _workdir(tmp_path / "x", "run", "pretrain.jsonl")
    second = _workdir(tmp_path / "y", "run", "pretrain.jsonl")
    labels = {label for label, _ in _panels(curves_figure([first, second]))["learning rate"]}
    assert labels == {f"{first} lr", f"{second} lr"}


def test_plot_cli_overlays_two_runs_and_needs_out_for_several(tmp_path, capsys):
    from gptjax.cli import main

    a = _workdir(tmp_path, "a", "pretrain.jsonl")
    b = _workdir(tmp_path, "b", "dpo.jsonl")
    with pytest.raises(ConfigError, match="--out"):
        plot_runs([a, b])
    out = tmp_path / "curves" / "ab.png"
    assert main(["plot", str(a), str(b), "--out", str(out)]) == 0
    printed = capsys.readouterr()
    assert printed.out.strip() == str(out) and printed.err == ""
    assert out.read_bytes().startswith(PNG_MAGIC)
    assert main(["plot", str(a), str(b)]) == 2
    assert capsys.readouterr().err.startswith("gptjax: error: give --out PNG")


def test_an_empty_metrics_file_is_a_data_error(tmp_path):
    (tmp_path / "metrics.jsonl").write_text("")
    with pytest.raises(DataError, match="no metric to draw"):
        curves_figure([tmp_path])


def test_the_grid_cells_left_over_are_hidden(tmp_path):
    fig = curves_figure([_workdir(tmp_path, "dpo", "dpo.jsonl")])
    visible = [ax for ax in fig.axes if ax.get_visible()]
    assert len(visible) == len(_panels(fig)) == 14 and len(fig.axes) == 15
    assert all(ax.get_lines() for ax in visible)
