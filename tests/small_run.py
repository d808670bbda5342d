"""Command-line overrides shared by the tests that run `gptjax train` in a subprocess."""

# A 2-layer, 64-wide model on 64-token rows: compiles and trains in seconds on 2 cores.
SMALL_MODEL = [
    "--config.model.num_layers=2",
    "--config.model.embed_dim=64",
    "--config.model.mlp_dim=256",
    "--config.data.seq_len=64",
    "--config.model.max_seq_len=64",
]
# With the built-in corpus: a 512-piece tokenizer trained for the run.
SMALL_VOCAB = ["--config.model.vocab_size=512", "--config.data.vocab_size=512"]
