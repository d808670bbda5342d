"""Supervised finetuning (SFT) of the tiny model into a chat model: the demo's second phase.

Run:    gptjax train --config configs/tiny_sft.py --workdir runs/demo-sft \\
            --config.init_from=runs/demo
Starts from the pretrained parameters of `init_from` (and its tokenizer), with a fresh
optimizer and schedule, on the built-in instruction set ("What does `json.dumps` do?" -> the
first sentence of its docstring). Held-out questions are never trained on; evaluation reports
the loss and accuracy on their answer tokens only. Figures: docs/benchmarks.md.
"""

from pathlib import Path

import ml_collections

from gptjax.config import load_config_file


def _pretrain_config() -> ml_collections.ConfigDict:
    # The same architecture as the model it finetunes: load configs/tiny.py beside this file.
    return load_config_file(Path(__file__).with_name("tiny.py"))


def get_config() -> ml_collections.ConfigDict:
    config = _pretrain_config()
    config.phase = "sft"
    config.init_from = ""  # the pretraining workdir, given on the command line

    data = config.data
    data.source = "conversations"
    data.conversations = "builtin"  # or JSONL files/globs, comma-separated
    data.validation_fraction = 0.05  # questions held out, chosen by a hash of their text

    train = config.train
    train.steps = 300
    train.log_every = 20
    train.eval_every = 100
    train.eval_batches = 16

    optim = config.optim
    optim.peak_lr = 1e-3  # a third of pretraining's: adapt, don't overwrite
    optim.warmup_steps = 20
    optim.weight_decay = 0.0

    config.checkpoint.save_every = 100

    sample = config.sample
    sample.prompts = (  # asked as user turns through the chat template
        "What does `json.dumps` do?",
        "What does `os.path.join` do?",
    )
    sample.max_new_tokens = 48
    sample.temperature = 0.0
    sample.top_k = 0
    return config
