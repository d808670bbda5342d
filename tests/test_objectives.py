"""The phase -> objective table: each phase's traits, its loss, its lines, and unknown phases."""

import typing
from types import SimpleNamespace

import pytest

from gptjax import objectives
from gptjax.config import RunConfig
from gptjax.dpo import dpo_objective
from gptjax.errors import ConfigError
from gptjax.objectives import objective_for
from gptjax.steps import lm_objective

DPO = SimpleNamespace(beta=0.3, label_smoothing=0.05, loss="ipo", reference="model")


@pytest.mark.parametrize(
    "phase, chat, has_perplexity, needs_reference",
    [
        ("pretrain", False, True, False),
        ("sft", True, True, False),
        ("dpo", True, False, True),
    ],
)
def test_each_phase_has_its_traits(phase, chat, has_perplexity, needs_reference):
    objective = objective_for(phase, DPO)
    assert objective.phase == phase
    assert objective.chat is chat
    assert objective.has_perplexity is has_perplexity
    assert objective.needs_reference is needs_reference


def test_pretrain_and_sft_share_the_next_token_loss():
    assert objective_for("pretrain").loss is lm_objective
    assert objective_for("sft").loss is lm_objective


def test_dpo_loss_carries_the_dpo_settings():
    loss = objective_for("dpo", DPO).loss
    assert loss.func is dpo_objective
    assert loss.keywords == {
        "beta": 0.3,
        "label_smoothing": 0.05,
        "loss_type": "ipo",
        "pair_kinds": (),
    }
    tagged = objective_for("dpo", DPO).for_pair_kinds(("other_answer", "shuffled"))
    assert tagged.loss.keywords["pair_kinds"] == ("other_answer", "shuffled")
    assert tagged.loss.keywords["beta"] == 0.3
    # Asked about its kind alone (as the checkpoint loader does), DPO has no loss to train with.
    bare = objective_for("dpo")
    assert bare.loss is None and bare.chat and bare.needs_reference


def test_every_configurable_phase_has_an_objective():
    configurable = typing.get_args(typing.get_type_hints(RunConfig)["phase"])
    assert configurable == objectives.PHASES
    for phase in configurable:
        assert objective_for(phase, DPO).phase == phase
    assert [objective_for(p).trains_on_pairs for p in configurable] == [False, False, True]


@pytest.mark.parametrize("phase", ["rlhf", "DPO", "", None])
def test_an_unknown_phase_is_refused_by_name(phase):
    with pytest.raises(ConfigError, match=rf"phase must be one of .*got {phase!r}"):
        objective_for(phase, DPO)


@pytest.mark.parametrize("phase, marker_bytes", [("pretrain", 7), ("sft", 0)])
def test_the_tokenizer_binds_what_its_ids_spell(phase, marker_bytes, tmp_path):
    """Pretraining text holds a chat marker only as typed text; SFT rows hold it as structure."""
    from test_text_lengths import char_tokenizer

    from gptjax.data.corpus import builtin_documents

    tok = char_tokenizer(builtin_documents()[:50], tmp_path)
    objective = objective_for(phase).for_tokenizer(tok)
    assert objective.loss.func is lm_objective
    lengths = objective.loss.keywords["lengths"]
    assert lengths.bytes[tok.token_id("<|end|>")] == marker_bytes
    assert objective_for("dpo", DPO).for_tokenizer(tok).loss is not None  # DPO keeps its own


def test_sft_summary_reports_answer_figures_not_the_unigram_bar():
    objective = objective_for("sft")
    evaluation = {"loss": 3.417, "perplexity": 30.47, "accuracy": 0.25, "bits_per_byte": 1.5}
    line = objective.summary_line(evaluation, 2.303)
    assert "unigram" not in line and "NOT below" not in line
    assert line == (
        "held-out answer loss 3.417 nats/token (1.500 bits/byte), perplexity 30.47, "
        "token accuracy 0.250"
    )
    start = {"loss": 5.1, "accuracy": 0.1}
    assert objective.summary_line(evaluation, 2.303, start).endswith(
        "(the starting model: 5.100, 0.100)"
    )


def test_next_token_lines():
    objective = objective_for("pretrain")
    evaluation = {"loss": 2.0, "perplexity": 7.389, "accuracy": 0.41234}
    assert objective.eval_details(evaluation) == "ppl 7.4, accuracy 0.412"
    assert objective.summary_line(evaluation, 2.5) == (
        "validation loss 2.000 nats/token vs unigram entropy 2.500 (below it by 0.500)"
    )
    assert objective.summary_line(evaluation, 1.5) == (
        "validation loss 2.000 nats/token vs unigram entropy 1.500 (NOT below it by -0.500)"
    )
    evaluation |= {"bits_per_byte": 0.7213, "nats_per_char": 1.25}
    assert objective.eval_details(evaluation) == (
        "ppl 7.4, accuracy 0.412, 0.721 bits/byte, 1.250 nats/char"
    )
    assert objective.summary_line(evaluation, 2.5) == (
        "validation loss 2.000 nats/token (0.721 bits/byte) vs unigram entropy 2.500 "
        "(below it by 0.500)"
    )


def test_dpo_lines():
    objective = objective_for("dpo", DPO)
    evaluation = {"loss": 0.6, "reward_accuracy": 0.75, "reward_margin": 0.125}
    evaluation |= {"chosen_logp": -1.5, "likelihood_accuracy": 0.5}
    assert objective.eval_details(evaluation) == (
        "reward accuracy 0.750, likelihood accuracy 0.500, margin 0.125, chosen logp/token -1.500"
    )
    assert objective.summary_line(evaluation, 2.5, {"likelihood_accuracy": 0.25}) == (
        "held-out DPO loss 0.600, reward accuracy 0.750, reward margin 0.125, likelihood "
        "accuracy 0.500 (the starting model: 0.250)"
    )
    tagged = objective.for_pair_kinds(("other_answer", "shuffled"))
    evaluation |= {"weight/other_answer": 3.0, "reward_accuracy/other_answer": 2 / 3}
    evaluation |= {"likelihood_accuracy/other_answer": 1 / 3}
    assert tagged.summary_line(evaluation, 2.5).endswith(
        "likelihood accuracy 0.500; other_answer (3 pairs): reward accuracy 0.667, likelihood "
        "accuracy 0.333"
    )  # a kind absent from the evaluation (shuffled here) is not shown
