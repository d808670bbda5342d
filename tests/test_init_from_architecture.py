"""A finetune adopts its starting checkpoint's architecture; what counts as set on purpose;
a failed start leaves no workdir it made. (End to end: tests/test_chat_recipe.py.)"""

import dataclasses
from pathlib import Path

import pytest
from etils import epath

from gptjax.config import load_config_with_origins, validate_static
from gptjax.errors import ConfigError
from gptjax.model import ModelConfig
from gptjax.train.architecture import ARCHITECTURE_FIELDS, adopt_architecture
from gptjax.train.workdir_lock import fresh_workdir

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
# A non-default base, as its checkpoint's metadata records it.
BASE = dataclasses.asdict(
    ModelConfig.llama(
        vocab_size=640, num_layers=2, num_heads=2, num_kv_heads=1, embed_dim=64, mlp_dim=96,
        max_seq_len=64,
    )
)  # fmt: skip
WHERE = "init_from runs/base step 40"


def _adopted(config_file: str, *overrides: str):
    config, on_purpose = load_config_with_origins(CONFIGS / config_file, overrides)
    notes = []
    adopt_architecture(config, BASE, WHERE, on_purpose, notes.append)
    return config, notes


def test_fields_set_on_purpose_are_overrides_and_what_a_file_changes_from_its_base():
    assert load_config_with_origins(CONFIGS / "tiny.py")[1] == {}  # the defaults
    _, sft = load_config_with_origins(CONFIGS / "tiny_sft.py", ["model.dropout_rate=0.1"])
    assert not [k for k in sft if k.startswith("model.") and k != "model.dropout_rate"]
    assert sft["model.dropout_rate"] == "--config.model.dropout_rate=0.1"
    assert sft["phase"].endswith("tiny_sft.py")
    _, dpo = load_config_with_origins(CONFIGS / "tiny_dpo.py")  # tiny_dpo -> tiny_sft -> tiny
    assert dpo["sample.prompts"].endswith("tiny_sft.py") and dpo["phase"].endswith("tiny_dpo.py")
    _, gpt2 = load_config_with_origins(CONFIGS / "gpt2_124m.py")
    assert gpt2["model.num_layers"].endswith("gpt2_124m.py")


def test_a_phase_config_adopts_the_base_architecture_and_keeps_runtime_fields():
    config, notes = _adopted("tiny_sft.py", "model.dropout_rate=0.1", "model.remat=full")
    for name in ARCHITECTURE_FIELDS:
        assert config.model[name] == BASE[name], name
    assert config.model.dropout_rate == 0.1 and config.model.remat == "full"  # not architecture
    assert config.data.seq_len == 64  # 128 would exceed the base's context
    assert len(notes) == 1 and notes[0].startswith(f"note: the architecture comes from {WHERE}: ")
    assert "model.vocab_size 2048 -> 640" in notes[0] and "data.seq_len 128 -> 64" in notes[0]
    validate_static(config)
    given = [
        f"model.{k}={v}" for k, v in BASE.items() if k in ARCHITECTURE_FIELDS and v is not None
    ]
    _, notes = _adopted("tiny_sft.py", *given, "data.seq_len=64")
    assert notes == []  # repeating the base's own values is no conflict


@pytest.mark.parametrize(
    "config_file,override,message",
    [
        (
            "tiny_sft.py",
            "model.num_layers=4",
            "model.num_layers=4 (set by --config.model.num_layers=4) differs from 2 in the "
            f"checkpoint it finetunes ({WHERE}): the architecture comes from init_from",
        ),
        ("gpt2_124m.py", None, "model.vocab_size=50257 (set by "),
        (
            "tiny_sft.py",
            "data.seq_len=128",
            "data.seq_len=128 (set by --config.data.seq_len=128) exceeds model.max_seq_len=64",
        ),
    ],
)
def test_a_conflict_set_on_purpose_names_both_values(config_file, override, message):
    with pytest.raises(ConfigError) as error:
        _adopted(config_file, *([override] if override else []))
    assert message in str(error.value) and error.value.exit_code == 2
    assert "init_from" in str(error.value) and "\n" not in str(error.value)


def test_a_failed_start_removes_only_a_workdir_it_created(tmp_path):
    made = tmp_path / "new" / "run"
    with pytest.raises(RuntimeError), fresh_workdir(str(made)):
        made.mkdir(parents=True)
        (made / "tokenizer").mkdir()
        raise RuntimeError("start failed")
    assert not (tmp_path / "new").exists()  # the parent it made too
    existing = tmp_path / "old"
    (existing / "keep.txt").parent.mkdir()
    (existing / "keep.txt").write_text("x")
    with pytest.raises(RuntimeError), fresh_workdir(str(existing)):
        (existing / "tokenizer").mkdir()
        raise RuntimeError("start failed")
    assert (existing / "keep.txt").exists() and (existing / "tokenizer").exists()
    committed = tmp_path / "committed"
    with pytest.raises(RuntimeError), fresh_workdir(str(committed)):
        (committed / "checkpoints" / "10").mkdir(parents=True)
        raise RuntimeError("failed after the first checkpoint")
    assert (committed / "checkpoints" / "10").is_dir()
    fine = tmp_path / "fine"
    with fresh_workdir(str(fine)):
        epath.Path(fine).mkdir()
    assert fine.is_dir()
