"""Command-line overrides shared by the tests that run `gptjax train` in a subprocess, and a
reader of the TensorBoard scalars such a run writes."""

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
# configs/tiny.py made Llama-style: RoPE, RMSNorm, SwiGLU, no biases, untied head, GQA.
LLAMA_STYLE = [
    "--config.model.position=rope",
    "--config.model.norm=rmsnorm",
    "--config.model.activation=swiglu",
    "--config.model.use_bias=False",
    "--config.model.tie_embeddings=False",
    "--config.model.num_kv_heads=2",
]

# A run that logs every step and saves every 4: for the SIGTERM / resume tests.
RESUMABLE = [
    *SMALL_MODEL,
    *SMALL_VOCAB,
    "--config.optim.warmup_steps=4",
    "--config.train.log_every=1",
    "--config.train.eval_batches=2",
    "--config.checkpoint.save_every=4",
    "--config.sample.max_new_tokens=0",
]


def train_command(workdir, steps: int, *extra: str) -> list[str]:
    """`gptjax train` of configs/tiny.py with RESUMABLE, evaluating once at the end."""
    import sys

    return [
        sys.executable, "-m", "gptjax.cli", "train", "--config", "configs/tiny.py",
        "--workdir", str(workdir), f"--config.train.steps={steps}",
        f"--config.train.eval_every={steps}", *RESUMABLE, *extra,
    ]  # fmt: skip


# Two simulated devices, not the in-process suite's eight: on 2 cores each step of a
# subprocess run is several times faster, and the code paths under test are the same.
TWO_DEVICES = "--xla_force_host_platform_device_count=2"


def subprocess_env(optimized: bool = False) -> dict[str, str]:
    """Short runs skip XLA's backend optimisations (compile time dominates them); long runs
    such as the demo keep them (unoptimised steps are several times slower)."""
    import os

    flags = TWO_DEVICES if optimized else TWO_DEVICES + " --xla_backend_optimization_level=0"
    return os.environ | {"XLA_FLAGS": flags}


def tensorboard_scalars(logdir) -> dict:
    """{(tag, step): value} of every scalar in the event files under `logdir`."""
    import tensorflow as tf
    from tensorflow.python.summary.summary_iterator import summary_iterator

    scalars = {}
    for path in sorted(logdir.glob("events.out.tfevents.*")):
        for event in summary_iterator(str(path)):
            for value in event.summary.value:
                # Without the scalar plugin's name TensorBoard would not list it as a scalar.
                assert value.metadata.plugin_data.plugin_name == "scalars"
                scalars[(value.tag, event.step)] = float(tf.make_ndarray(value.tensor))
    return scalars
