"""`gptjax.load(...).generate` and `gptjax sample` share one text-in, text-out path: the same
text for the same settings, and the token budget capped to the context left (with one note);
the README's Python block runs in tests/test_readme_commands.py.

All on tests/fixtures/checkpoint_v0_1 (a pretrained 1-layer model with a 32-token context,
loaded read-only), so no test here trains.
"""

import subprocess
import sys
from pathlib import Path

import pytest
from small_run import subprocess_env

import gptjax
from gptjax import cli
from gptjax.errors import CheckpointError, ConfigError

ROOT = Path(__file__).resolve().parents[1]
FIXTURE = ROOT / "tests" / "fixtures" / "checkpoint_v0_1"
CONTEXT = 32  # the fixture's model.max_seq_len
PROMPT = "The json module"
PROMPT_TOKENS = 10  # <s> + the 9 pieces of PROMPT in the fixture's tokenizer


@pytest.fixture(scope="module")
def model():
    return gptjax.load(FIXTURE)


def _sample(capsys, *args: str) -> tuple[int, str, str]:
    code = cli.main(["sample", str(FIXTURE), *args])
    out, err = capsys.readouterr()
    return code, out, err


def test_load_exposes_the_checkpoint(model):
    assert model.phase == "pretrain" and model.step == 2 and not model.is_chat
    assert model.config.max_seq_len == CONTEXT
    assert model.metadata["phase"] == "pretrain" and "model" in model.metadata
    assert len(model.tokenizer.encode(PROMPT)) + 1 == PROMPT_TOKENS
    assert isinstance(model.model, gptjax.Transformer)
    assert "step 2 (pretrain)" in repr(model)


def test_greedy_generate_equals_sample(model, capsys):
    settings = ["--max-new-tokens", "6", "--temperature", "0"]
    code, out, _ = _sample(capsys, "--prompt", PROMPT, "--prompt", "Hello", *settings)
    assert code == 0
    texts = model.generate([PROMPT, "Hello"], max_new_tokens=6, temperature=0)
    assert out == f"---\n{PROMPT}{texts[0]}\n---\nHello{texts[1]}\n"
    assert model.generate(PROMPT, max_new_tokens=6, temperature=0) == texts[0]  # str in, str out


def test_sampled_generate_equals_sample_with_the_same_seed(model, capsys):
    settings = dict(max_new_tokens=8, temperature=1.0, top_k=20, top_p=0.9, seed=3)
    flags = ["--max-new-tokens", "8", "--temperature", "1", "--top-k", "20", "--top-p", "0.9"]
    code, out, _ = _sample(capsys, "--prompt", PROMPT, *flags, "--seed", "3")
    assert code == 0
    assert out == f"---\n{PROMPT}{model.generate(PROMPT, **settings)}\n"


def test_sample_caps_the_default_budget_to_the_context_left_and_says_so_once(capsys):
    code, out, err = _sample(capsys, "--prompt", PROMPT, "--temperature", "0")  # budget 128
    assert code == 0, err
    room = CONTEXT - PROMPT_TOKENS
    notes = [line for line in err.splitlines() if line.startswith("note:")]
    assert notes == [
        f"note: --max-new-tokens 128 capped to {room}: the prompt takes {PROMPT_TOKENS} of the "
        f"model's {CONTEXT}-token context"
    ]
    assert out.startswith(f"---\n{PROMPT}")


def test_a_budget_that_fits_is_not_touched_and_not_noted(model):
    notes = []
    model.generate(PROMPT, max_new_tokens=CONTEXT - PROMPT_TOKENS, temperature=0, log=notes.append)
    assert notes == []


def test_the_api_caps_too_naming_its_own_argument(model):
    notes = []
    text = model.generate([PROMPT, "Hi"], max_new_tokens=100, temperature=0, log=notes.append)
    room = CONTEXT - PROMPT_TOKENS
    assert notes == [
        f"note: max_new_tokens 100 capped to {room}: the longest prompt takes {PROMPT_TOKENS} "
        f"of the model's {CONTEXT}-token context"
    ]
    assert len(text) == 2


def test_a_prompt_that_fills_the_context_is_still_refused(model, capsys):
    long_prompt = " ".join(["The json module"] * 8)
    code, out, err = _sample(capsys, "--prompt", long_prompt)
    assert code == 2 and out == ""
    assert (
        err.strip()
        .splitlines()[-1]
        .endswith(
            f"the whole of the model's {CONTEXT}-token context: no room to generate; shorten it"
        )
    )
    with pytest.raises(ConfigError, match="no room to generate"):
        model.generate(long_prompt)


def test_bad_arguments_are_config_errors(model):
    with pytest.raises(ConfigError, match="template 'json'"):
        model.generate(PROMPT, template="json")
    with pytest.raises(ConfigError, match="max_new_tokens must be positive"):
        model.generate(PROMPT, max_new_tokens=0)
    with pytest.raises(ConfigError, match="no prompts given"):
        model.generate([])


def test_load_refuses_a_missing_workdir_as_usage(tmp_path):
    with pytest.raises(ConfigError, match="does not exist") as error:
        gptjax.load(tmp_path / "no-such-run")
    assert error.value.exit_code == 2
    with pytest.raises(CheckpointError, match="no checkpoints/ directory"):
        gptjax.load(tmp_path)  # exists, holds no checkpoint: exit 74 as before


def test_repetition_controls_reach_generation_the_same_way_from_sample_and_the_api(model, capsys):
    settings = ["--max-new-tokens", "16", "--temperature", "0"]
    repeat = ["--no-repeat-ngram-size", "2", "--repetition-penalty", "1.3"]
    code, out, err = _sample(capsys, "--prompt", PROMPT, *settings, *repeat)
    assert code == 0, err
    text = model.generate(
        PROMPT, max_new_tokens=16, temperature=0, no_repeat_ngram_size=2, repetition_penalty=1.3
    )
    assert out == f"---\n{PROMPT}{text}\n"
    assert text != model.generate(PROMPT, max_new_tokens=16, temperature=0)  # off by default
    ids = model.tokenizer.encode(PROMPT + text)
    pairs = list(zip(ids, ids[1:], strict=False))
    assert len(pairs) == len(set(pairs))  # the fixture's prompt repeats no pair either


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--repetition-penalty", "0"], "--repetition-penalty must be > 0 (1 = off), got 0.0"),
        (["--no-repeat-ngram-size", "-2"], "--no-repeat-ngram-size must be >= 0 (0 = off), got -2"),
    ],
)
def test_bad_repetition_flags_exit_2_with_one_line(capsys, flags, message):
    code, out, err = _sample(capsys, "--prompt", PROMPT, *flags)
    assert code == 2 and out == ""
    assert err.strip().splitlines()[-1].endswith(message)


def test_load_in_a_fresh_interpreter_prints_nothing_but_the_answer():
    """Orbax warned "Given directory is read only" twice per `gptjax.load` (the read-only mode
    gptjax asks for); a notebook user saw it above every answer."""
    script = (
        f"import gptjax; m = gptjax.load({str(FIXTURE)!r}); "
        "print(m.generate('The json module', max_new_tokens=4, temperature=0))"
    )
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, env=subprocess_env()
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stderr == "", result.stderr
    assert len(result.stdout.splitlines()) == 1
