"""`--config NAME`: the configs that ship with the package are found by name from any directory,
an unknown name exits 2 naming the built-in ones, and a path works as before."""

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from gptjax import cli
from gptjax.builtin_configs import BUILTIN_CONFIG_DIR, builtin_config_names
from gptjax.config import load_config_file
from gptjax.errors import ConfigError

ROOT = Path(__file__).resolve().parents[1]
REPO_CONFIGS = sorted(path.stem for path in (ROOT / "configs").glob("*.py"))


def test_every_repository_config_is_built_in():
    assert builtin_config_names() == REPO_CONFIGS
    assert {"tiny", "tiny_sft", "tiny_dpo", "gpt2_124m"} <= set(REPO_CONFIGS)
    for name in REPO_CONFIGS:  # the package's files are the repository's, not copies
        assert (BUILTIN_CONFIG_DIR / f"{name}.py").read_bytes() == (
            ROOT / "configs" / f"{name}.py"
        ).read_bytes()


def test_a_bare_name_loads_the_built_in_config_from_any_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # no configs/ here
    sft = load_config_file("tiny_sft")  # tiny_sft.py loads tiny.py beside it
    dpo = load_config_file("tiny_dpo")  # ... which loads tiny_sft.py, which loads tiny.py
    tiny = load_config_file(ROOT / "configs" / "tiny.py")
    assert (sft.phase, dpo.phase, tiny.phase) == ("sft", "dpo", "pretrain")
    assert sft.model == tiny.model and dpo.model == tiny.model
    assert load_config_file("tiny").to_dict() == tiny.to_dict()


def test_a_path_is_a_path_even_beside_a_built_in_name(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    Path("mine.py").write_text(
        "from gptjax.config import load_config_file\n\n"
        "def get_config():\n"
        "    config = load_config_file('tiny')\n"
        "    config.train.steps = 7\n"
        "    return config\n"
    )
    assert load_config_file("mine.py").train.steps == 7
    with pytest.raises(ConfigError, match="no built-in config of that name") as error:
        load_config_file("mine")  # a bare name is never a file in the current directory
    assert error.value.exit_code == 2


def test_an_unknown_name_exits_2_listing_the_built_in_names(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    code = cli.main(["train", "--config", "tinny", "--workdir", "runs/x"])
    err = capsys.readouterr().err
    assert code == 2
    assert err.startswith("gptjax: error: --config tinny: no built-in config of that name")
    assert ", ".join(REPO_CONFIGS) in err
    assert not (tmp_path / "runs").exists()
    # A missing file names the built-in configs too: the fix for a pip user without configs/.
    code = cli.main(["bench", "--config", "configs/tiny.py"])
    err = capsys.readouterr().err
    assert code == 2 and "config file configs/tiny.py does not exist" in err
    assert "built-in configs, by name: char_baby" in err


def test_gptjax_configs_lists_every_built_in_config_with_its_summary(capsys):
    assert cli.main(["configs"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split()[0] for line in lines] == REPO_CONFIGS
    tiny = next(line for line in lines if line.startswith("tiny "))
    assert tiny.split(None, 1)[1] == (ROOT / "configs/tiny.py").read_text().split("\n")[0][3:]
    assert cli.main(["configs", "--path"]) == 0
    assert Path(capsys.readouterr().out.strip()) == (ROOT / "configs").resolve()


def test_train_and_bench_help_name_the_built_in_configs(capsys):
    for verb in ("train", "bench"):
        with pytest.raises(SystemExit):
            cli.main([verb, "--help"])
        help_text = " ".join(capsys.readouterr().out.split())
        assert "tiny, tiny_dpo, tiny_sft" in help_text and "gptjax configs" in help_text


@pytest.mark.slow
def test_a_built_wheel_ships_the_configs_and_finds_them_by_name(tmp_path):
    """What `pip install` gets: real files under gptjax/configs, found by `--config NAME`
    from a directory with no configs/."""
    source = tmp_path / "src"
    files = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT, capture_output=True, check=True,
    ).stdout.decode().split("\0")  # fmt: skip
    for name in filter(None, files):
        path, target = ROOT / name, source / name
        target.parent.mkdir(parents=True, exist_ok=True)
        if path.is_symlink():
            target.symlink_to(path.readlink())
        elif path.is_file():
            target.write_bytes(path.read_bytes())
    wheels = tmp_path / "wheels"
    build = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
         "-w", str(wheels), str(source)],
        capture_output=True, text=True,
    )  # fmt: skip
    assert build.returncode == 0, build.stderr[-3000:]
    (wheel,) = wheels.glob("gptjax-*.whl")
    installed = tmp_path / "site"
    with zipfile.ZipFile(wheel) as archive:
        shipped = {n for n in archive.namelist() if n.startswith("gptjax/configs/")}
        archive.extractall(installed)
    assert shipped == {f"gptjax/configs/{name}.py" for name in REPO_CONFIGS}
    assert not (installed / "gptjax" / "configs").is_symlink()
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    result = subprocess.run(
        [sys.executable, "-m", "gptjax.cli", "train", "--config", "tiny_dpo",
         "--workdir", "runs/x", "--print-config"],
        cwd=elsewhere, capture_output=True, text=True,
        env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(installed), "HOME": str(tmp_path)},
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    assert "phase: dpo" in result.stdout
