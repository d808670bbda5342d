"""What each phase of the recipe minimises, and how its figures are read.

The phases differ in their objective, not in their loop: pretraining and SFT minimise the
same next-token cross-entropy (SFT differs only by its data, whose weights keep the answers'
tokens), DPO a preference loss against a frozen reference model. An `Objective` answers
everything the loop, the CLI and the loader ask about a phase, so `objective_for` is the one
place a phase name is interpreted.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import ClassVar

from gptjax.dpo import make_dpo_objective
from gptjax.errors import ConfigError
from gptjax.steps import LossFn, lm_objective
from gptjax.tokenizer import Tokenizer
from gptjax.tokenizer.text_lengths import text_lengths

PHASES = ("pretrain", "sft", "dpo")  # the recipe's order


@dataclasses.dataclass(frozen=True)
class Objective:
    """A phase's objective. `loss` is what the train and eval steps evaluate (see
    `gptjax.steps`); it is None only for an objective asked about its kind alone (a DPO one
    built without its `dpo` settings)."""

    phase: str
    chat: bool  # its models answer through the chat template (a user turn, then theirs)
    loss: LossFn | None
    has_perplexity: ClassVar[bool]  # the loss is nats per token, so exp(loss) means something
    needs_reference: ClassVar[bool]  # the step also reads a frozen reference model
    # Its rows are preference pairs (data.source="preferences"): one prompt with two answers,
    # which attend to the prompt but not to each other.
    trains_on_pairs: ClassVar[bool]

    def eval_details(self, evaluation: dict) -> str:
        """The figures shown after "validation loss X" in the training log."""
        raise NotImplementedError

    def for_tokenizer(self, tokenizer: Tokenizer) -> Objective:
        """This objective with what it needs to know of the run's tokenizer (the text each id
        spells, for bits per byte)."""
        return self

    def for_pair_kinds(self, pair_kinds: tuple[str, ...]) -> Objective:
        """This objective with the kinds of its held-out pairs (only preference pairs have
        kinds)."""
        return self

    def summary_line(
        self, evaluation: dict, unigram_entropy: float, start: dict | None = None
    ) -> str:
        """The final held-out line `gptjax train` prints; `start` is the evaluation of the
        model the run started from (step 0 of a finetuning run), when there was one."""
        raise NotImplementedError


@dataclasses.dataclass(frozen=True)
class NextTokenObjective(Objective):
    loss: LossFn = lm_objective
    has_perplexity: ClassVar[bool] = True
    needs_reference: ClassVar[bool] = False
    trains_on_pairs: ClassVar[bool] = False

    def for_tokenizer(self, tokenizer: Tokenizer) -> Objective:
        # Chat rows hold the markers as structure; pretraining text only as typed text.
        lengths = text_lengths(tokenizer, markers_are_text=not self.chat)
        return dataclasses.replace(self, loss=functools.partial(lm_objective, lengths=lengths))

    def eval_details(self, evaluation: dict) -> str:
        details = f"ppl {evaluation['perplexity']:.1f}, accuracy {evaluation['accuracy']:.3f}"
        if "bits_per_byte" in evaluation:  # known once the objective has the tokenizer
            details += (
                f", {evaluation['bits_per_byte']:.3f} bits/byte, "
                f"{evaluation['nats_per_char']:.3f} nats/char"
            )
        return details

    def summary_line(
        self, evaluation: dict, unigram_entropy: float, start: dict | None = None
    ) -> str:
        valid = evaluation["loss"]
        per_byte = ""
        if "bits_per_byte" in evaluation:
            per_byte = f" ({evaluation['bits_per_byte']:.3f} bits/byte)"
        if self.chat:
            # SFT scores answer tokens only: their unigram entropy is no bar for a model that
            # reads the question, so the yardstick is the model the run started from.
            line = (
                f"held-out answer loss {valid:.3f} nats/token{per_byte}, perplexity "
                f"{evaluation['perplexity']:.2f}, token accuracy {evaluation['accuracy']:.3f}"
            )
            if start:
                line += f" (the starting model: {start['loss']:.3f}, {start['accuracy']:.3f})"
            return line
        # The unigram entropy is what a model that ignores all context would reach: a loss
        # below it shows the model learned something from the context.
        return (
            f"validation loss {valid:.3f} nats/token{per_byte} vs unigram entropy "
            f"{unigram_entropy:.3f} ({'below' if valid < unigram_entropy else 'NOT below'} it by "
            f"{unigram_entropy - valid:.3f})"
        )


@dataclasses.dataclass(frozen=True)
class PreferenceObjective(Objective):
    has_perplexity: ClassVar[bool] = False
    needs_reference: ClassVar[bool] = True
    trains_on_pairs: ClassVar[bool] = True

    # The held-out pairs' kinds (gptjax.data.preferences), when tagged: the loss then also
    # sums each kind's figures, which the log lines show.
    pair_kinds: tuple[str, ...] = ()
    dpo_config: object = None

    def for_pair_kinds(self, pair_kinds: tuple[str, ...]) -> Objective:
        """This objective reporting its held-out figures per pair kind too."""
        loss = None if self.dpo_config is None else make_dpo_objective(self.dpo_config, pair_kinds)
        return dataclasses.replace(self, loss=loss, pair_kinds=tuple(pair_kinds))

    def eval_details(self, evaluation: dict) -> str:
        return (
            f"reward accuracy {evaluation['reward_accuracy']:.3f}, likelihood accuracy "
            f"{evaluation['likelihood_accuracy']:.3f}, margin {evaluation['reward_margin']:.3f}, "
            f"chosen logp/token {evaluation['chosen_logp']:.3f}"
        ) + self._per_kind(evaluation)

    def summary_line(
        self, evaluation: dict, unigram_entropy: float, start: dict | None = None
    ) -> str:
        line = (
            f"held-out DPO loss {evaluation['loss']:.3f}, reward accuracy "
            f"{evaluation['reward_accuracy']:.3f}, reward margin {evaluation['reward_margin']:.3f}"
        )
        if "likelihood_accuracy" in evaluation:
            line += f", likelihood accuracy {evaluation['likelihood_accuracy']:.3f}"
            if start and "likelihood_accuracy" in start:
                line += f" (the starting model: {start['likelihood_accuracy']:.3f})"
        return line + self._per_kind(evaluation)

    def _per_kind(self, evaluation: dict) -> str:
        """ "; KIND (N pairs): reward accuracy R, likelihood accuracy P" for each kind."""
        return "".join(
            f"; {kind} ({evaluation[f'weight/{kind}']:.0f} pairs): reward accuracy "
            f"{evaluation[f'reward_accuracy/{kind}']:.3f}, likelihood accuracy "
            f"{evaluation[f'likelihood_accuracy/{kind}']:.3f}"
            for kind in self.pair_kinds
            if f"weight/{kind}" in evaluation
        )


def objective_for(phase: str, dpo_config=None) -> Objective:
    """The objective of `phase` ("pretrain", "sft" or "dpo"). `dpo_config` is the config's
    `dpo` section (beta, label_smoothing, loss), which DPO's loss needs; without it a DPO
    objective still says what kind it is, with `loss` None."""
    if phase == "pretrain":
        return NextTokenObjective(phase, chat=False)
    if phase == "sft":
        return NextTokenObjective(phase, chat=True)
    if phase == "dpo":
        loss = None if dpo_config is None else make_dpo_objective(dpo_config)
        return PreferenceObjective(phase, chat=True, loss=loss, dpo_config=dpo_config)
    raise ConfigError(f"phase must be one of {PHASES}, got {phase!r}")
