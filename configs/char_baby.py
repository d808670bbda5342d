"""nanoGPT's "baby GPT" (config/train_shakespeare_char.py) on a text file you bring, char-level.

Run:    gptjax prepare --source 'text:input.txt,docs=chunks:65536' --validation-tail 0.1 \
            --tokenizer-type char --vocab-size 343 --out data/char
        gptjax train --config configs/char_baby.py --workdir runs/char_baby \
            --config.data.prepared_dir=data/char
        gptjax eval runs/char_baby --text 'text:valid.txt,docs=chunks:65536' --json eval.json
`--validation-tail 0.1` holds out the last 10% of the file's characters, nanoGPT's split; the
run evaluates on exactly that. A char tokenizer has 264 reserved pieces plus one per distinct
character of the training text: `prepare` refuses another --vocab-size and names the right
one (343 for 79 characters); model.vocab_size (384) must be at least that. valid.txt (the
same last 10%, as a file) is only needed to evaluate with `gptjax eval` beside other models.

The shape and schedule are nanoGPT's: 6 layers, 6 heads, 384 wide, context 256, dropout 0.2,
no biases, tied embeddings, batch 64, AdamW lr 1e-3 with 100 warmup steps and cosine decay to
1e-4 over 5,000 steps, beta2 0.99, weight decay 0.1, gradient clip 1.0. gptjax's own choices:
documents packed with attention kept inside each (`data.packing`), unrolled layers (faster on
CPU), an evaluation at step 0 (the untrained loss, as nanoGPT prints at iter 0).
Losses: nats/token (= nats/char for a char tokenizer, up to the end-of-document targets and
byte-fallback pieces of characters the training text lacked), bits/byte and nats/char of the
UTF-8 text: `gptjax eval` prints all three; nanoGPT's figure is nats/char.

Reaches (measured, docs/benchmarks.md "Char-level baby GPT"): the full 5,000 steps of batch 64
(82M tokens) take about 3 days on 2 shared CPU cores and were not run here; nanoGPT's figure
on Shakespeare is 1.47 nats/char, and issue 17 reports 1.876 (gptjax) vs 1.899 (nanoGPT) on a
5 MB file. Measured on bible_web.txt (4.9 MB), shortened to 300 steps of batch 8
(--config.train.steps=300 --config.train.global_batch_size=8 --config.optim.warmup_steps=30):
the whole validation tail at 2.369 nats/token, 3.386 bits/byte, 2.369 nats/char (from 6.197
nats/char at step 0; unigram entropy 3.053), 34 minutes at 337 tokens/s median, float32.
"""

from pathlib import Path

import ml_collections

from gptjax.config import load_config_file


def get_config() -> ml_collections.ConfigDict:
    # Every field not set below is configs/tiny.py's.
    config = load_config_file(Path(__file__).with_name("tiny.py"))
    model = config.model
    model.vocab_size = 384  # >= the char tokenizer's pieces (264 reserved + the characters)
    model.num_layers = 6  # N
    model.num_heads = 6  # H
    model.embed_dim = 384  # D
    model.mlp_dim = 1536  # F = 4 D
    model.max_seq_len = 256  # nanoGPT's block_size
    model.use_bias = False  # nanoGPT's bias=False
    model.dropout_rate = 0.2  # the baby GPT's regulariser: it overfits a 1 MB text without
    model.scan_layers = False  # unrolled 6 layers step ~8% faster on XLA:CPU

    data = config.data
    data.source = "prepared"  # a char-level `gptjax prepare` of your text (command above)
    data.prepared_dir = "data/char"  # its --out
    data.vocab_size = 384  # unused with a prepared dir (its tokenizer is fixed); kept in step
    data.seq_len = 256  # L

    train = config.train
    train.steps = 5000  # nanoGPT's max_iters
    train.global_batch_size = 64  # nanoGPT's batch_size (no gradient accumulation)
    train.log_every = 10  # nanoGPT's log_interval
    train.eval_every = 250  # nanoGPT's eval_interval
    train.eval_batches = 1000  # every validation row (nanoGPT samples 200 random batches)
    train.eval_batch_size = 64  # rows per validation batch
    train.eval_at_start = True  # the untrained loss first: ~ln(vocab) nats/token

    optim = config.optim
    optim.peak_lr = 1e-3  # nanoGPT's learning_rate
    optim.end_lr_fraction = 0.1  # min_lr 1e-4, reached at lr_decay_iters = max_iters
    optim.warmup_steps = 100  # nanoGPT's warmup_iters
    optim.b2 = 0.99  # nanoGPT: "make a bit bigger because number of tokens per iter is small"

    config.checkpoint.save_every = 500  # steps between checkpoints
    config.sample.prompts = ("\n",)  # a new line: the model starts a passage of its own
    config.sample.max_new_tokens = 200  # characters
    return config
