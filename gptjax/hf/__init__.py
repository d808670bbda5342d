"""Hugging Face interop for GPT-2 and Llama: config mapping, weight layout, import into a
gptjax checkpoint, export to a transformers directory, tokenizers and safetensors files."""
