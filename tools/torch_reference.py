"""The PyTorch training steps gptjax is timed against: nanoGPT-style or transformers' GPT-2.

Both train the config's GPT-2 shape in float32 eager mode on fixed random batches of the
config's batch shape: forward, cross-entropy at every one of the L positions (as gptjax's),
backward, global-norm clipping, AdamW (decay on weight matrices only, fused=False).

- "nanogpt": tools/torch_gpt.py, a plain GPT written like nanoGPT's (nn.Linear, fused causal
  scaled_dot_product_attention): the fastest eager baseline a user would write.
- "transformers": `transformers.GPT2LMHeadModel` of the same shape (its default SDPA
  attention), what a Hugging Face user trains.
"""

from __future__ import annotations

import time

import torch

REFERENCES = ("nanogpt", "transformers")


def build_model(name: str, model_config) -> torch.nn.Module:
    if name == "nanogpt":
        from torch_gpt import GPT

        return GPT(model_config)
    if name == "transformers":
        import transformers

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
        return _LogitsOnly(transformers.GPT2LMHeadModel(hf_config))
    raise ValueError(f"unknown reference {name!r}; one of {REFERENCES}")


class _LogitsOnly(torch.nn.Module):
    """GPT2LMHeadModel called like the nanoGPT model: tokens -> logits."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, tokens_BL):
        return self.model(tokens_BL).logits


class TorchTrainer:
    """One reference model + AdamW + clipping on fixed random batches: a step per call."""

    def __init__(self, name: str, config, model_config, threads: int):
        from torch_gpt import adamw

        torch.set_num_threads(threads)
        torch.manual_seed(config.seed)
        self.name = name
        self.model = build_model(name, model_config).train()
        self.optimizer = adamw(self.model, config.optim)
        self.clip_norm = config.optim.clip_norm
        generator = torch.Generator().manual_seed(config.seed)
        shape = (config.train.global_batch_size, config.data.seq_len + 1)
        tokens = torch.randint(0, model_config.vocab_size, shape, generator=generator)
        self.inputs, self.targets = tokens[:, :-1], tokens[:, 1:]
        self.vocab_size = model_config.vocab_size
        self.last_loss = float("nan")

    def step(self) -> float:
        """One training step; returns the loss (a host value, so the step has finished)."""
        logits = self.model(self.inputs)
        loss = torch.nn.functional.cross_entropy(
            logits.reshape(-1, self.vocab_size), self.targets.reshape(-1)
        )
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.clip_norm)
        self.optimizer.step()
        self.last_loss = loss.item()
        return self.last_loss

    def time_steps(self, count: int) -> list[float]:
        times = []
        for _ in range(count):
            start = time.perf_counter()
            self.step()
            times.append(time.perf_counter() - start)
        return times
