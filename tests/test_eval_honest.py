"""`gptjax eval`'s held-out verdicts, small-set warning, raw format and preference figures,
on hand-made data (the CLI on trained models: tests/test_chat_recipe.py)."""

import json
from pathlib import Path

import numpy as np
import pytest

from gptjax.chat_template import render
from gptjax.data import corpus
from gptjax.data.conversations import builtin_conversations, pack_conversations
from gptjax.data.conversations import split_conversations as split_conv
from gptjax.errors import DataError
from gptjax.inference.eval_sets import conversations_verdict, pairs_verdict
from gptjax.inference.heldout import (
    RunSplit,
    manifest_sha256,
    run_split,
    small_set_warning,
    text_verdict,
)
from gptjax.inference.preference_eval import _sums, read_tagged_preferences
from gptjax.raw_template import raw_prompt, render_raw
from gptjax.tokenizer import load_tokenizer


@pytest.fixture(scope="module")
def tok():
    # A checked-in tokenizer with the chat symbols: no tokenizer to train here.
    return load_tokenizer(Path(__file__).parent / "fixtures/checkpoint_v0_1/tokenizer")


def _sft_metadata(tok, fraction=0.05, seq_len=128) -> dict:
    """What an SFT run on the built-in conversations records: its config and the hash of its
    packed training side."""
    train, _ = split_conv(builtin_conversations(), fraction)
    return {
        "data_sha256": pack_conversations(train, tok, seq_len).sha256(),
        "config": {
            "data": {
                "source": "conversations",
                "conversations": "builtin",
                "validation_fraction": fraction,
                "seq_len": seq_len,
            }
        },
    }


def test_only_the_runs_own_held_out_questions_are_called_held_out(tok):
    metadata = _sft_metadata(tok)
    split = run_split(metadata, tok)
    assert not split.unknown and split.questions
    train, valid = split_conv(builtin_conversations(), 0.05)
    verdict = conversations_verdict(split, valid)
    assert verdict.held_out and verdict.note.startswith("held out by its run")
    # Trained-on conversations, even one among held-out ones, are not known to be held out.
    mixed = conversations_verdict(split, valid + train[:1])
    assert not mixed.held_out
    assert "not known to be held out: 1 of" in mixed.note
    # The DPO split hashes the same question, so held-out pairs of those questions count.
    pairs = [{"messages": c[:-1], "chosen": "a", "rejected": "b"} for c in valid]
    assert pairs_verdict(split, pairs).held_out
    # Text is not what an SFT run held out.
    assert not text_verdict(split, ["some document"]).held_out


def test_a_data_hash_that_does_not_match_the_rebuilt_split_proves_nothing(tok):
    metadata = _sft_metadata(tok)
    metadata["config"]["data"]["validation_fraction"] = 0.1  # not the fraction it trained with
    split = run_split(metadata, tok)
    assert "does not match" in split.unknown
    _, valid = split_conv(builtin_conversations(), 0.1)
    assert not conversations_verdict(split, valid).held_out
    assert "records no data hash" in run_split({"config": {}}, tok).unknown


def test_missing_training_files_are_reported_not_guessed(tok, tmp_path):
    metadata = _sft_metadata(tok)
    metadata["config"]["data"]["conversations"] = str(tmp_path / "gone.jsonl")
    split = run_split(metadata, tok)
    assert split.unknown.startswith("its data.conversations cannot be rebuilt here")


def test_builtin_text_is_held_out_only_for_the_pretraining_run_that_split_it(tok):
    from gptjax.data.token_rows import TokenRows, encode_documents

    train, valid = corpus.split_documents(corpus.builtin_documents(), 0.05)
    rows = TokenRows(encode_documents(train, tok), seq_len=64, bos_id=tok.bos_id, pad_id=0)
    metadata = {  # the hash gptjax.train.loop records for the built-in corpus
        "data_sha256": rows.sha256(),
        "config": {"data": {"source": "builtin", "validation_fraction": 0.05, "seq_len": 64}},
    }
    split = run_split(metadata, tok)
    assert not split.unknown
    assert text_verdict(split, valid).held_out
    verdict = text_verdict(split, valid + train[:2])
    assert not verdict.held_out and "2 of" in verdict.note


def test_prepared_data_is_identified_by_its_manifest():
    manifest = {"format": "x", "splits": {"valid": {"documents": 3}}}
    split = run_split(
        {"data_sha256": manifest_sha256(manifest), "config": {"data": {"source": "prepared"}}},
        None,
    )
    assert text_verdict(split, [], manifest_sha256(manifest)).held_out
    other = manifest | {"format": "y"}
    assert not text_verdict(split, [], manifest_sha256(other)).held_out
    verdict = text_verdict(RunSplit("x", documents=frozenset({"a"})), [], "abc")
    assert not verdict.held_out and verdict.note.endswith("not this prepared split")


def test_small_held_out_sets_are_warned_about_with_their_count():
    assert small_set_warning(1, "conversations").startswith(
        "warning: only 1 held-out conversations"
    )
    assert "steps of 0.03" in small_set_warning(30, "preference pairs")
    assert small_set_warning(50, "documents") is None


def test_raw_format_scores_the_answer_and_the_end_of_the_document(tok):
    messages = [{"role": "user", "content": "Why?"}, {"role": "assistant", "content": "Because."}]
    ids, mask = render_raw(tok, messages)
    prompt = raw_prompt(tok, messages[:1])
    assert ids[: len(prompt)] == prompt and prompt[0] == tok.bos_id
    assert ids[-1] == tok.eos_id and mask == [0] * len(prompt) + [1] * (len(ids) - len(prompt))
    assert tok.decode(ids[len(prompt) : -1]).strip() == "Because."
    # No chat symbol in the raw format, and the chat format's ids differ.
    chat_ids, _ = render(tok, messages)
    assert chat_ids != ids and not {4, 5, 6, 7} & set(ids)  # system user assistant end
    with pytest.raises(DataError):
        render_raw(tok, messages[:1])


def test_preference_sums_separate_the_policys_own_preference_from_the_reward():
    # Three pairs in a row of four columns; the last column holds no pair.
    policy_w = np.array([[-1.0, -5.0, -2.0, 0.0]])
    policy_l = np.array([[-2.0, -4.0, -3.0, 0.0]])
    tokens = np.array([[1.0, 1.0, 1.0, 0.0]])
    ref_w = np.array([[-1.5, -6.0, -1.0, 0.0]])
    ref_l = np.array([[-2.0, -4.0, -3.0, 0.0]])
    sums = _sums([(policy_w, policy_l, tokens, tokens)], [(ref_w, ref_l)], beta=0.5)
    assert sums["pairs"] == 3
    assert sums["likelihood_accuracy"] == 2  # pairs 0 and 2: chosen likelier under π alone
    # h = (π_w - ref_w) - (π_l - ref_l): 0.5, 1.0, -1.0 -> two positive, margin 0.5 * 0.5
    assert sums["reward_accuracy"] == 2
    assert sums["reward_margin"] == pytest.approx(0.5 * (0.5 + 1.0 - 1.0))
    alone = _sums([(policy_w, policy_l, tokens, tokens)], None, beta=0.5)
    assert alone["reward_accuracy"] == 0 and alone["likelihood_accuracy"] == 2


def test_pairs_keep_their_kind_and_a_bad_kind_names_its_line(tmp_path):
    path = tmp_path / "pairs.jsonl"
    lines = [
        {"prompt": "q1", "chosen": "a", "rejected": "b", "kind": "shuffled"},
        {"prompt": "q2", "chosen": "a", "rejected": "b"},
    ]
    path.write_text("\n".join(json.dumps(x) for x in lines) + "\n")
    pairs = read_tagged_preferences([str(path)])
    assert [p.get("kind") for p in pairs] == ["shuffled", None]
    path.write_text(json.dumps(lines[0] | {"kind": 3}) + "\n")
    with pytest.raises(DataError, match="pairs.jsonl:1: kind must be a non-empty string"):
        read_tagged_preferences([str(path)])


@pytest.mark.parametrize(
    "flags, code, message",
    [
        (["--beta", "0"], 2, "--beta must be positive"),
        (["--text", "prepared:"], 65, "name the directory"),
        (["--text", "prepared:{tmp}/none"], 65, "is not a prepared dataset"),
    ],
)
def test_eval_refuses_bad_flags_in_one_line_before_loading(tmp_path, capsys, flags, code, message):
    from gptjax import cli

    flags = [flag.replace("{tmp}", str(tmp_path)) for flag in flags]
    assert cli.main(["eval", str(tmp_path), *flags]) == code
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1
