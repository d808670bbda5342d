"""Bad files handed to `gptjax import-hf` and `gptjax sample`, run as a user runs them (a
subprocess): one line on stderr, the exit code of its kind, no traceback, nothing written.
File names read from an index or a manifest never lead out of their folder."""

import json
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from gptjax import cli
from gptjax.data.shards import FORMAT, read_manifest
from gptjax.errors import DataError
from gptjax.hf.safetensors_io import write_safetensors

ROOT = Path(__file__).resolve().parents[1]
# The smallest GPT-2 config.json import-hf accepts; every case fails before its weights matter.
GPT2_CONFIG = {
    "model_type": "gpt2",
    "architectures": ["GPT2LMHeadModel"],
    "vocab_size": 64,
    "n_embd": 8,
    "n_layer": 1,
    "n_head": 2,
    "n_positions": 16,
}


def _refusal(*args: str) -> tuple[int, str]:
    """(exit code, the one stderr line) of `gptjax ARGS` in a subprocess."""
    run = subprocess.run(
        [sys.executable, "-m", "gptjax.cli", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert "Traceback" not in run.stderr, run.stderr
    assert run.stderr.count("\n") == 1 and run.stderr.startswith("gptjax: error: "), run.stderr
    return run.returncode, run.stderr.strip()


def _model_dir(tmp_path: Path, config=GPT2_CONFIG) -> Path:
    model = tmp_path / "model"
    model.mkdir()
    (model / "config.json").write_text(json.dumps(config))
    return model


def _tensors() -> list[tuple[str, np.ndarray]]:
    return [("a", np.arange(4, dtype=np.float32)), ("b", np.ones((2, 3), np.float32))]


def _rewrite_header(path: Path, edit) -> None:
    """`edit(header)` applied to a safetensors file's JSON header, the data left as it was."""
    data = path.read_bytes()
    (length,) = struct.unpack("<Q", data[:8])
    header = edit(json.loads(data[8 : 8 + length]))
    text = json.dumps(header).encode()
    text += b" " * (-len(text) % 8)
    path.write_bytes(struct.pack("<Q", len(text)) + text + data[8 + length :])


def _safetensors(model: Path, edit) -> None:
    write_safetensors(model / "model.safetensors", _tensors(), {"format": "pt"})
    _rewrite_header(model / "model.safetensors", edit)


def _overlap(header: dict) -> dict:
    header["b"]["data_offsets"] = [8, 32]  # starts inside a's bytes [0, 16)
    return header


def _torch_file(model: Path, what: str) -> None:
    import torch

    path = model / "pytorch_model.bin"
    if what == "garbage":
        path.write_bytes(b"\x00not a torch file" * 64)
        return
    objects = {"tensors": {"a": torch.zeros(3)}, "a list": [torch.zeros(3)]}
    objects["a pickled object"] = {"a": torch.zeros(3), "b": Path("x")}
    torch.save(objects[what.removeprefix("truncated ")], path)
    if what.startswith("truncated"):
        path.write_bytes(path.read_bytes()[:300])


def _index(model: Path, name: str) -> None:
    write_safetensors(model / "model-1.safetensors", _tensors(), {})
    index = {"weight_map": {"a": "model-1.safetensors", "b": name}}
    (model / "model.safetensors.index.json").write_text(json.dumps(index))


IMPORT_CASES = {  # name: (how the model directory is spoiled, exit code, message)
    "config.json a list": (
        lambda m: (m / "config.json").write_text("[1, 2]"),
        2,
        "config.json holds a JSON list, not the object of settings",
    ),
    "garbage pytorch_model.bin": (
        lambda m: _torch_file(m, "garbage"),
        65,
        "pytorch_model.bin is not a PyTorch checkpoint of torch.save's zip format",
    ),
    "truncated pytorch_model.bin": (
        lambda m: _torch_file(m, "truncated tensors"),
        65,
        "pytorch_model.bin is damaged or truncated (PytorchStreamReader failed",
    ),
    "pytorch_model.bin with a pickled object": (
        lambda m: _torch_file(m, "a pickled object"),
        65,
        "pytorch_model.bin holds objects other than tensors",
    ),
    "pytorch_model.bin holding a list": (
        lambda m: _torch_file(m, "a list"),
        65,
        "pytorch_model.bin holds a list, not a state dict",
    ),
    "safetensors header a list": (
        lambda m: _safetensors(m, lambda header: [1, 2, 3]),
        65,
        "its header is a JSON list",
    ),
    "safetensors offsets overlapping": (
        lambda m: _safetensors(m, _overlap),
        65,
        "tensor b starts at byte 8, which overlaps tensor a",
    ),
    "safetensors shorter than its header": (
        lambda m: _safetensors(m, lambda h: h | {"c": {**h["b"], "data_offsets": [40, 64]}}),
        65,
        "the header lists 64 bytes of tensors but the file holds 40: truncated",
    ),
    "safetensors offsets not the tensor's size": (
        lambda m: _safetensors(m, lambda h: h | {"b": {**h["b"], "shape": [2, 2]}}),
        65,
        "tensor b has data_offsets [16, 40] (24 bytes), but F32 (2, 2) takes 16",
    ),
    "index entry ../../../../etc/passwd": (
        lambda m: _index(m, "../../../../etc/passwd"),
        65,
        "file name '../../../../etc/passwd' leaves its folder",
    ),
    "index entry absolute": (
        lambda m: _index(m, "/etc/passwd"),
        65,
        "file name '/etc/passwd' leaves its folder",
    ),
    "index entry a URL": (
        lambda m: _index(m, "gs://bucket/model.safetensors"),
        65,
        "file name 'gs://bucket/model.safetensors' leaves its folder",
    ),
}


def _spoiled(case: str, tmp_path: Path) -> tuple[list[str], int, str]:
    """(import-hf arguments, expected exit code, message) of a model directory spoiled so."""
    spoil, code, message = IMPORT_CASES[case]
    model = _model_dir(tmp_path)
    spoil(model)
    return ["import-hf", str(model), "--workdir", str(tmp_path / "run")], code, message


# Every case runs in-process in the fast tier (torch imported once), and again as the real
# command in a subprocess among the slow tests (each start costs seconds, torch's more).
@pytest.mark.parametrize("case", list(IMPORT_CASES))
def test_import_hf_refuses_a_bad_file_in_one_line_in_process(case, tmp_path, capsys):
    args, expected_code, message = _spoiled(case, tmp_path)
    assert cli.main(args) == expected_code
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err, err
    assert "Traceback" not in err and "weights_only" not in err, err
    assert not (tmp_path / "run").exists()


@pytest.mark.slow
@pytest.mark.parametrize("case", list(IMPORT_CASES))
def test_import_hf_refuses_a_bad_file_in_one_line(case, tmp_path):
    args, expected_code, message = _spoiled(case, tmp_path)
    code, line = _refusal(*args)
    assert code == expected_code and message in line, line
    assert not (tmp_path / "run").exists()


LLAMA_CONFIG = {
    "model_type": "llama",
    "vocab_size": 64,
    "hidden_size": 8,
    "intermediate_size": 16,
    "num_hidden_layers": 1,
    "num_attention_heads": 2,
    "max_position_embeddings": 16,
}
CONFIG_CASES = {  # config.json -> the message (exit 2): each a traceback once
    "rope_scaling text": (LLAMA_CONFIG | {"rope_scaling": "linear"}, "`rope_scaling` is 'linear'"),
    "rope_parameters a list": (LLAMA_CONFIG | {"rope_parameters": [1]}, "`rope_parameters` is"),
    "epsilon text": (GPT2_CONFIG | {"layer_norm_epsilon": "x"}, "`layer_norm_epsilon` is 'x'"),
    "model_type a list": (GPT2_CONFIG | {"model_type": ["gpt2"]}, "model_type ['gpt2'] is not"),
}


@pytest.mark.parametrize("case", list(CONFIG_CASES))
def test_import_hf_refuses_config_values_of_the_wrong_type(case, tmp_path, capsys):
    config, message = CONFIG_CASES[case]
    model = _model_dir(tmp_path, config)
    assert cli.main(["import-hf", str(model), "--workdir", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err, err


def test_sample_refuses_a_binary_prompts_file_in_one_line(tmp_path):
    prompts = tmp_path / "prompts.bin"
    prompts.write_bytes(b"a prompt\n\x89PNG\r\n\x1a\n\x00\x00\xff")
    # The prompts are read before the checkpoint: no workdir is needed to meet the error.
    code, line = _refusal("sample", str(tmp_path / "run"), "--prompts-file", str(prompts))
    assert code == 65 and f"--prompts-file {prompts}:2: not UTF-8 text" in line, line


def test_sample_refuses_a_prompts_file_with_nul_bytes(tmp_path):
    prompts = tmp_path / "prompts.txt"
    prompts.write_bytes(b"a prompt\n\x00\x01\x02\n")
    code, line = _refusal("sample", str(tmp_path / "run"), "--prompts-file", str(prompts))
    assert code == 65 and "holds NUL bytes, so it is not a text file" in line, line


@pytest.mark.parametrize(
    "name", ["../../../../etc/passwd", "/etc/passwd", "gs://b/train-00000.bin", "a/../../x"]
)
def test_manifest_shard_names_may_not_leave_the_prepared_directory(name, tmp_path):
    shard = {"file": name, "tokens": 4, "sha256": "0" * 64, "max_token_id": 3}
    splits = {"train": {"shards": [shard]}, "valid": {"shards": []}}
    (tmp_path / "manifest.json").write_text(json.dumps({"format": FORMAT, "splits": splits}))
    with pytest.raises(DataError) as error:
        read_manifest(tmp_path)
    assert error.value.exit_code == 65 and "\n" not in str(error.value)
    assert f"file name {name!r} leaves its folder {tmp_path}" in str(error.value)
