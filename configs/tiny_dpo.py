"""Preference tuning (DPO) of the tiny chat model: the demo's third phase.

Run:    gptjax train --config configs/tiny_dpo.py --workdir runs/demo-dpo \\
            --config.init_from=runs/demo-sft
The policy starts from the SFT checkpoint named by `init_from`; the same weights, frozen,
are the reference. Data: the built-in preference set (each built-in question's true answer
chosen over another question's answer, and over its own words shuffled: both kinds, see below),
split like the SFT set so held-out questions stay held out; those hold a pair of each kind.
Evaluation reports the held-out DPO loss, reward and likelihood accuracy (overall and per
pair kind) and margin, and the chosen answers' log-probability per token. Figures: README
(DPO section) and docs/benchmarks.md.
"""

from pathlib import Path

import ml_collections

from gptjax.config import load_config_file


def _sft_config() -> ml_collections.ConfigDict:
    # The same model and chat settings as the phase it tunes: configs/tiny_sft.py beside this.
    return load_config_file(Path(__file__).with_name("tiny_sft.py"))


def get_config() -> ml_collections.ConfigDict:
    config = _sft_config()
    config.phase = "dpo"
    config.init_from = ""  # the SFT workdir, given on the command line

    data = config.data
    data.source = "preferences"
    data.conversations = ""
    data.preferences = "builtin"  # or JSONL files/globs, comma-separated
    # Both kinds, not the library's default (other_answer alone): on this 1M-parameter model the
    # hard kind alone pushes fluent answers down in general, and the demo's chat then babbles
    # (README "Pair kinds": BLEU 2.90 vs 5.82, answers looping 0.547 vs 0.406).
    data.preference_kinds = "other_answer,shuffled"

    train = config.train
    train.steps = 150
    train.eval_every = 50

    optim = config.optim
    optim.peak_lr = 2e-4  # DPO moves far on small steps; keep near the reference
    optim.warmup_steps = 10

    config.checkpoint.save_every = 50

    dpo = config.dpo
    dpo.beta = 0.1
    dpo.label_smoothing = 0.0
    dpo.loss = "sigmoid"
    dpo.reference = "model"
    return config
