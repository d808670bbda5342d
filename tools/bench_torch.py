"""gptjax against PyTorch on the same GPT-2 training step, timed alternately in one process.

Run:    python tools/bench_torch.py --config configs/nanogpt_cpu.py
        python tools/bench_torch.py --config configs/nanogpt_cpu.py --config.model.vocab_size=65
Needs the `bench` extra (pip install -e '.[bench]': torch's CPU build and transformers).

The reference is `transformers.GPT2LMHeadModel` built from the config's shape (GPT-2 family
only: learned positions, LayerNorm, GELU, tied embeddings, biases), in float32, with its
default attention (PyTorch's fused scaled_dot_product_attention), trained by
`torch.optim.AdamW` with global-norm clipping, on random tokens of the same batch shape. Its
loss is computed like gptjax's: cross-entropy at every one of the L positions.

Each round times --steps gptjax steps, then --steps PyTorch steps (after --warmup untimed
steps of each); the ratio of a round is PyTorch's median step time over gptjax's. The two
frameworks take turns so that the machine's load drifts over both alike. By default gptjax
runs one simulated host device per core with a data-parallel mesh (--cpu-devices), and
PyTorch uses one thread per core.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time


def parse_args(argv: list[str]) -> tuple[argparse.Namespace, list[str]]:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n")[0],
        epilog="--config.SECTION.FIELD=VALUE overrides the config, as for `gptjax train`.",
    )
    parser.add_argument("--config", required=True, help="a GPT-2-family config file")
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds (default 3)")
    parser.add_argument("--steps", type=int, default=10, help="timed steps per round and side")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps per side first")
    parser.add_argument(
        "--cpu-devices",
        type=int,
        default=os.cpu_count(),
        help="simulated host devices for gptjax (default: one per core)",
    )
    parser.add_argument("--threads", type=int, default=os.cpu_count(), help="PyTorch threads")
    parser.add_argument("--json", metavar="PATH", help="also write the rounds as JSON")
    from gptjax.cli import split_overrides

    rest, overrides = split_overrides(argv)
    args = parser.parse_args(rest)
    return args, overrides


def check_gpt2_family(model_config) -> None:
    """The reference is GPT-2: refuse shapes it cannot build rather than compare unlike models."""
    wanted = dict(
        position="learned",
        norm="layernorm",
        activation="gelu",
        use_bias=True,
        tie_embeddings=True,
        dtype="float32",
    )
    for field, value in wanted.items():
        if getattr(model_config, field) != value:
            sys.exit(f"bench_torch: model.{field} must be {value!r} (the GPT-2 reference)")
    if model_config.kv_heads != model_config.num_heads or model_config.head_dim is not None:
        sys.exit("bench_torch: grouped kv heads or an explicit head_dim have no GPT-2 twin")


class TorchGPT2:
    """GPT2LMHeadModel + AdamW + clipping on fixed random batches: one step per call."""

    def __init__(self, config, model_config, threads: int):
        import torch
        import transformers

        torch.set_num_threads(threads)
        torch.manual_seed(config.seed)
        hf_config = transformers.GPT2Config(
            vocab_size=model_config.vocab_size,
            n_positions=model_config.max_seq_len,
            n_embd=model_config.embed_dim,
            n_layer=model_config.num_layers,
            n_head=model_config.num_heads,
            n_inner=model_config.mlp_dim,
            activation_function="gelu_new",  # the tanh approximation, as gptjax's GPT-2
            resid_pdrop=model_config.dropout_rate,
            embd_pdrop=model_config.dropout_rate,
            attn_pdrop=model_config.dropout_rate,
            layer_norm_epsilon=model_config.norm_eps,
            tie_word_embeddings=True,
            # GPT-2's own ids (50256) lie outside a smaller vocabulary; unused in training.
            bos_token_id=model_config.vocab_size - 1,
            eos_token_id=model_config.vocab_size - 1,
        )
        self.torch = torch
        self.model = transformers.GPT2LMHeadModel(hf_config).train()
        optim = config.optim
        self.optimizer = torch.optim.AdamW(
            self.model.parameters(),
            lr=optim.peak_lr,
            betas=(optim.b1, optim.b2),
            eps=optim.eps,
            weight_decay=optim.weight_decay,
        )
        self.clip_norm = optim.clip_norm
        generator = torch.Generator().manual_seed(config.seed)
        shape = (config.train.global_batch_size, config.data.seq_len + 1)
        tokens = torch.randint(0, model_config.vocab_size, shape, generator=generator)
        self.inputs, self.targets = tokens[:, :-1], tokens[:, 1:]
        self.vocab_size = model_config.vocab_size

    def step(self) -> float:
        """One training step; returns the loss (a host value, so the step has finished)."""
        logits = self.model(self.inputs).logits
        loss = self.torch.nn.functional.cross_entropy(
            logits.reshape(-1, self.vocab_size), self.targets.reshape(-1)
        )
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.clip_norm)
        self.optimizer.step()
        return loss.item()

    def time_steps(self, count: int) -> list[float]:
        times = []
        for _ in range(count):
            start = time.perf_counter()
            self.step()
            times.append(time.perf_counter() - start)
        return times


def main(argv: list[str]) -> int:
    args, overrides = parse_args(argv)
    from gptjax.train.memory_plan import simulate_host_devices

    simulate_host_devices(args.cpu_devices)  # before JAX starts its backend (one per core)
    os.environ.setdefault("JAX_PLATFORMS", "cpu")
    from gptjax.config import apply_overrides, load_config_file, model_config
    from gptjax.train.bench import build_bench
    from gptjax.train.peak import measured_cpu_peak

    config = load_config_file(args.config)
    apply_overrides(config, overrides)
    shape = model_config(config)
    check_gpt2_family(shape)
    bench = build_bench(config, data="synthetic", log=lambda _: None)
    reference = TorchGPT2(config, shape, args.threads)
    bench.time_steps(args.warmup)
    reference.time_steps(args.warmup)
    tokens = bench.tokens_per_step
    print(
        f"{shape.num_layers} layers, width {shape.embed_dim}, seq {config.data.seq_len}, "
        f"batch {config.train.global_batch_size}, vocab {shape.vocab_size}; gptjax mesh "
        f"{dict(bench.mesh.shape)}, torch {args.threads} threads"
    )
    print("| round | gptjax tokens/s | PyTorch tokens/s | ratio gptjax / PyTorch |")
    print("|---|---|---|---|")
    rounds = []
    for index in range(args.rounds):
        ours = statistics.median(wait + step for wait, step in bench.time_steps(args.steps))
        theirs = statistics.median(reference.time_steps(args.steps))
        rounds.append({"gptjax_step_sec": ours, "torch_step_sec": theirs, "ratio": theirs / ours})
        row = f"{tokens / ours:,.0f} | {tokens / theirs:,.0f} | {theirs / ours:.2f}"
        print(f"| {index + 1} | {row} |")
    peak = measured_cpu_peak()
    summary = {
        "ratio_median": statistics.median(r["ratio"] for r in rounds),
        "gptjax_tokens_per_sec": tokens / statistics.median(r["gptjax_step_sec"] for r in rounds),
        "torch_tokens_per_sec": tokens / statistics.median(r["torch_step_sec"] for r in rounds),
        "flops_per_token": bench.flops_per_token,
        "cpu_peak_flops_per_sec": peak,
    }
    for side in ("gptjax", "torch"):
        summary[f"{side}_mfu"] = summary[f"{side}_tokens_per_sec"] * bench.flops_per_token / peak
    print(
        f"median ratio {summary['ratio_median']:.2f}; MFU gptjax "
        f"{100 * summary['gptjax_mfu']:.1f}%, PyTorch {100 * summary['torch_mfu']:.1f}% of "
        f"{peak / 1e9:.0f} GFLOP/s (float32 matmul measured in this process)"
    )
    if args.json:
        with open(args.json, "w") as out:
            json.dump({"rounds": rounds, **summary}, out, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
