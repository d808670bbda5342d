"""tools/peft_lora.py: gptjax's LoRA settings as a peft LoraConfig on the exported model.

Each case builds the Hugging Face model `gptjax export-hf` would describe (hf_config), wraps it
with peft, and checks what peft adapts against gptjax's adapters: the modules, the rank and
alpha/r scale of each, and the number of trained parameters.
"""

import sys
from pathlib import Path

import pytest

from gptjax import lora as lora_lib
from gptjax.hf.config import family_of, hf_config
from gptjax.model import ModelConfig

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tools"))
from peft_lora import peft_lora_kwargs, peft_trainable_count  # noqa: E402

GPT2 = ModelConfig(vocab_size=64, num_layers=2, num_heads=4, embed_dim=32, mlp_dim=128,
                   max_seq_len=16)  # fmt: skip
LLAMA = ModelConfig(vocab_size=64, num_layers=2, num_heads=4, embed_dim=32, mlp_dim=96,
                    max_seq_len=16, num_kv_heads=2, position="rope", norm="rmsnorm",
                    activation="swiglu", use_bias=False, tie_embeddings=False)  # fmt: skip


def _peft_model(model_config: ModelConfig, kwargs: dict):
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoConfig, AutoModelForCausalLM

    # One torch thread: its OpenMP pool, once started beside XLA's threads in this process,
    # was seen to abort a later JAX test (tests/test_checkpoint.py run after this file).
    torch.set_num_threads(1)

    family = family_of(model_config)
    hf = hf_config(model_config, family, {"bos": 1, "eos": 2}, "float32")
    config = AutoConfig.for_model(**hf)
    return get_peft_model(AutoModelForCausalLM.from_config(config), LoraConfig(**kwargs))


def _adapted(peft_model) -> dict[str, tuple[int, float]]:
    """{module name without its layer prefix: (rank, scale)} of every adapted module."""
    found = {}
    for name, module in peft_model.named_modules():
        if hasattr(module, "lora_A") and "default" in module.lora_A:
            short = ".".join(name.split(".")[-2:])
            found[short] = (module.r["default"], module.scaling["default"])
    return found


def _trained(peft_model) -> int:
    return sum(p.numel() for p in peft_model.parameters() if p.requires_grad)


@pytest.mark.parametrize(
    ("targets", "fused_rank"),
    [("all", 12), ("q,v", 8), ("q", 4), ("o,up,down", None)],
)
def test_gpt2_fused_qkv_gets_the_rank_of_equal_parameter_count(targets, fused_rank):
    """GPT-2's c_attn holds q, k and v: its rank trains as many parameters as gptjax's
    separate q/k/v adapters, at gptjax's alpha/r; o, up, down map one to one."""
    lora = lora_lib.LoraConfig(8, 16.0, lora_lib.parse_targets(targets, has_gate=False))
    kwargs = peft_lora_kwargs(lora, GPT2)
    model = _peft_model(GPT2, kwargs)
    adapted = _adapted(model)
    expected = {"attn.c_proj": "o", "mlp.c_fc": "up", "mlp.c_proj": "down"}
    assert set(adapted) - {"attn.c_attn"} == {m for m, t in expected.items() if t in lora.targets}
    for module, (rank, scale) in adapted.items():
        assert rank == (fused_rank if module == "attn.c_attn" else 8)
        assert scale == pytest.approx(16.0 / 8)  # gptjax's alpha / r on every module
    assert ("attn.c_attn" in adapted) == (fused_rank is not None)
    assert _trained(model) == lora_lib.count(lora, GPT2) == peft_trainable_count(kwargs, GPT2)


def test_llama_targets_map_adapter_for_adapter():
    """Llama exports have a module per projection: same rank, alpha and count (GQA's k/v
    narrower than q included)."""
    lora = lora_lib.LoraConfig(4, 8.0, lora_lib.parse_targets("all", has_gate=True))
    kwargs = peft_lora_kwargs(lora, LLAMA)
    assert "rank_pattern" not in kwargs and "fan_in_fan_out" not in kwargs
    model = _peft_model(LLAMA, kwargs)
    adapted = _adapted(model)
    assert set(adapted) == {lora_lib.TARGETS[t][2] for t in lora.targets}
    assert all(v == (4, pytest.approx(2.0)) for v in adapted.values())
    assert _trained(model) == lora_lib.count(lora, LLAMA) == peft_trainable_count(kwargs, LLAMA)
    assert kwargs["lora_dropout"] == 0.0 and kwargs["bias"] == "none"
