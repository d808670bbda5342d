"""Bad config values are refused before anything compiles: one line naming the field, exit 2."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from gptjax import cli
from gptjax.config import apply_overrides, load_config_file, validate
from gptjax.errors import ConfigError

REPO = Path(__file__).resolve().parent.parent
TINY = REPO / "configs" / "tiny.py"


def _tiny(*overrides: str):
    config = load_config_file(TINY)
    apply_overrides(config, list(overrides))
    return config


def _refusal(*overrides: str, device_count: int = 8) -> str:
    """The one-line message a bad override (or the validation after it) is refused with."""
    with pytest.raises(ConfigError) as info:
        validate(_tiny(*overrides), device_count=device_count)
    assert info.value.exit_code == 2
    message = str(info.value)
    assert "\n" not in message
    return message


def test_the_unmodified_template_is_accepted():
    derived = validate(_tiny(), device_count=8)
    assert derived["mesh_shape"] == {"data": 8, "fsdp": 1, "tensor": 1}


@pytest.mark.parametrize(
    "overrides, names",
    [
        (["model.num_heads=3"], "model.num_heads"),  # 3 does not divide embed_dim 128
        (["model.num_kv_heads=3"], "model.num_kv_heads"),  # does not divide num_heads 4
        (["model.num_kv_heads=abc"], "model.num_kv_heads"),  # None-valued field given text
        (["model.head_dim=0"], "model.head_dim"),
        (["model.norm_eps=0"], "model.norm_eps"),
        (["model.dtype=float16"], "model.dtype"),
        (["model.remat=some"], "model.remat"),
        (["model.dropout_rate=1"], "model.dropout_rate"),
        (["model.head_chunk_len=-1"], "model.head_chunk_len"),
        (["model.head_chunk_len=48"], "model.head_chunk_len"),  # does not divide seq_len 128
        (["model.projection_backward=fast"], "model.projection_backward"),
        (["model.norm_backward=fused"], "model.norm_backward"),
        (["train.global_batch_size=12"], "train.global_batch_size"),  # 12 rows over 8 devices
        (["train.grad_accum_steps=3"], "train.grad_accum_steps"),  # 16 rows in 3 micro-batches
        (["train.eval_batch_size=4"], "train.eval_batch_size"),
        (["train.steps=0"], "train.steps"),
        (["data.seq_len=256"], "data.seq_len"),  # beyond model.max_seq_len=128
        (["data.vocab_size=4096"], "data.vocab_size"),  # beyond model.vocab_size=2048
        (["data.tokenizer_type=wordpiece"], "data.tokenizer_type"),
        (["data.validation_fraction=1"], "data.validation_fraction"),
        (["data.source=web"], "data.source"),
        (["data.source=prepared"], "data.prepared_dir"),  # prepared needs its directory
        (["data.packing=sometimes"], "data.packing"),
        (["train.steps=10", "optim.warmup_steps=11"], "optim.warmup_steps"),  # > train.steps
        (["optim.eps=0"], "optim.eps"),
        (["optim.b2=1"], "optim.b2"),
        (["sample.top_k=-1"], "sample.top_k"),
        (["mesh.data=16"], "mesh"),  # needs 16 devices, 8 exist
        (["mesh.fsdp=0"], "mesh.fsdp"),
        (["mesh.data=-1", "mesh.fsdp=-1"], "mesh"),
    ],
)
def test_bad_value_is_refused_naming_the_field(overrides, names):
    assert names in _refusal(*overrides)


@pytest.mark.parametrize(
    "uses_its_own_tokenizer",
    [["data.source=prepared", "data.prepared_dir=data/mine"], ["data.tokenizer=tok/"]],
)
def test_data_vocab_size_is_checked_only_where_a_tokenizer_is_trained_with_it(
    uses_its_own_tokenizer,
):
    # A prepared 347-piece char tokenizer: data.vocab_size (2048) sizes nothing here; the
    # tokenizer's own size is checked against the model when it is loaded.
    validate(_tiny(*uses_its_own_tokenizer, "model.vocab_size=347"), device_count=8)
    assert "data.vocab_size=2048" in _refusal("model.vocab_size=347")


def test_pretraining_on_conversations_is_refused_and_sft_on_them_accepted():
    conversations = ["data.source=conversations", "data.conversations=builtin"]
    message = _refusal("phase=pretrain", *conversations)
    assert message.startswith('phase="pretrain" with data.source="conversations"')
    assert 'set phase="sft"' in message
    validate(_tiny("phase=sft", *conversations), device_count=8)
    validate(_tiny("phase=sft"), device_count=8)  # finetuning on text stays allowed


def test_mesh_larger_than_the_devices_says_how_many_it_needs():
    message = _refusal("mesh.data=16")
    assert "16 devices" in message and "8 are available" in message


@pytest.mark.parametrize(
    "override, message",
    [
        ("model.num_layer=3", "unknown config field model.num_layer"),
        ("modle.num_layers=3", "unknown config field modle"),
        ("mesh.pipeline=2", "unknown config field mesh.pipeline"),
        ("train.steps=abc", "--config.train.steps=abc: expected an int"),
        ("train.steps=1.5", "--config.train.steps=1.5: expected an int, got a float"),
        ("optim.peak_lr=fast", "--config.optim.peak_lr=fast: expected a float"),
        ("optim.peak_lr=True", "--config.optim.peak_lr=True: expected a float, got a bool"),
        ("model.use_bias=maybe", "--config.model.use_bias=maybe: expected true or false"),
        ("train.steps", "--config.train.steps: expected --config.FIELD=VALUE"),
    ],
)
def test_override_is_refused_before_validation(override, message):
    config = load_config_file(TINY)
    with pytest.raises(ConfigError, match="^" + message.replace(".", r"\.")) as info:
        apply_overrides(config, [override])
    assert info.value.exit_code == 2


@pytest.mark.parametrize(
    "text, value",
    [("true", True), ("True", True), ("yes", True), ("1", True)]
    + [("false", False), ("FALSE", False), ("no", False), ("0", False)],
)
def test_bool_override_parsing(text, value):
    config = _tiny(f"model.use_bias={'false' if value else 'true'}")  # start from the opposite
    apply_overrides(config, [f"model.use_bias={text}"])
    assert config.model.use_bias is value


def test_int_widens_to_float_for_a_float_field_and_nothing_else_is_cast():
    config = _tiny("optim.peak_lr=1", "train.steps=700", "model.num_kv_heads=2")
    assert config.optim.peak_lr == 1.0 and type(config.optim.peak_lr) is float
    assert config.train.steps == 700 and type(config.train.steps) is int
    assert config.model.num_kv_heads == 2 and type(config.model.num_kv_heads) is int
    validate(config, device_count=8)


def _edited_tiny(tmp_path: Path, old: str, new: str) -> Path:
    """A copy of tiny.py with one piece of text replaced (old must occur exactly once)."""
    text = TINY.read_text()
    assert text.count(old) == 1, old
    path = tmp_path / "edited.py"
    path.write_text(text.replace(old, new))
    return path


_END = "    return config\n"


@pytest.mark.parametrize(
    "old, new, message",
    [
        # a typo in a file leaves the real field missing
        ("train.eval_batch_size = 16", "train.eval_batch_siz = 16", "config is missing field "
         "train.eval_batch_size"),
        (_END, "    del config.model['mlp_dim']\n" + _END, "config is missing field model.mlp_dim"),
        ("optim.peak_lr = 3e-3", "optim.peak_lr = '3e-3'", "optim.peak_lr must be a finite number"),
        ("model.use_bias = True", "model.use_bias = 'no'", "model.use_bias must be true or false"),
        ("config.seed = 0", "config.seed = -1", "seed must be a non-negative integer"),
        (
            "config.sharding_rules = DEFAULT_RULES",
            "config.sharding_rules = (('embed', 'model'),)",
            "sharding_rules: logical axis 'embed' maps to 'model'",
        ),
    ],
)  # fmt: skip
def test_bad_config_file_is_refused_naming_the_field(tmp_path, old, new, message):
    config = load_config_file(_edited_tiny(tmp_path, old, new))
    with pytest.raises(ConfigError) as info:
        validate(config, device_count=8)
    assert str(info.value).startswith(message)


def test_config_file_that_raises_is_refused_naming_the_file(tmp_path):
    path = _edited_tiny(tmp_path, _END, "    raise RuntimeError('boom')\n" + _END)
    with pytest.raises(ConfigError, match="edited.py failed to load: RuntimeError") as info:
        load_config_file(path)
    assert info.value.exit_code == 2


def _cli(capsys, *args: str) -> tuple[int, str, str]:
    code = cli.main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def test_cli_bad_override_exits_2_with_one_line_naming_the_field(tmp_path, capsys):
    workdir = tmp_path / "run"
    code, out, err = _cli(
        capsys,
        "train", "--config", str(TINY), "--workdir", str(workdir),
        "--config.model.num_heads=3",
    )  # fmt: skip
    assert code == 2
    assert out == ""
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("gptjax: error: ")
    assert "model.num_heads" in lines[0]
    assert not any(workdir.rglob("*"))  # refused before a tokenizer or data was written


def test_cli_missing_config_file_exits_2(tmp_path, capsys):
    missing = tmp_path / "nope.py"
    code, _, err = _cli(capsys, "train", "--config", str(missing), "--workdir", str(tmp_path))
    assert code == 2
    assert str(missing) in err and len(err.strip().splitlines()) == 1


def test_cli_override_without_value_exits_2(tmp_path, capsys):
    code, _, err = _cli(
        capsys, "train", "--config", str(TINY), "--workdir", str(tmp_path), "--config.train.steps"
    )
    assert code == 2
    assert "--config.train.steps" in err and "missing value" in err


def test_cli_override_with_a_separate_value_is_applied(tmp_path, capsys):
    code, out, _ = _cli(
        capsys,
        "train", "--config", str(TINY), "--workdir", str(tmp_path),
        "--config.train.steps", "700", "--print-config",
    )  # fmt: skip
    assert code == 0
    assert "steps: 700" in out


def test_console_script_exits_2_with_one_line(tmp_path):
    script = Path(sys.executable).parent / "gptjax"
    if not script.is_file():
        pytest.skip(f"console script not installed next to {sys.executable}")
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}  # one CPU device
    result = subprocess.run(
        [str(script), "train", "--config", "configs/tiny.py", "--workdir", str(tmp_path / "run"),
         "--config.mesh.data=16"],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("gptjax: error: mesh ") and "16 devices" in lines[0]
    assert result.stdout == ""
