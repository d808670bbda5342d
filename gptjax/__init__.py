"""gptjax: train GPT-style chat models in JAX (pretrain, SFT, DPO) and sample from them."""
