"""Hugging Face interop against `transformers` itself (torch CPU): import, export, round trip.

Small random GPT2LMHeadModel / LlamaForCausalLM models are built and saved here (no
downloads); their weights are redrawn with larger scales than the default init (and norm
scales away from 1) so that a swapped, transposed or misplaced tensor moves the logits far
beyond the tolerance.
"""

import importlib
import json
import shutil
import subprocess
import sys
from pathlib import Path

import jax
import numpy as np
import pytest
import torch
from flax import nnx
from small_run import subprocess_env
from transformers import (
    AutoModelForCausalLM,
    AutoTokenizer,
    GPT2Config,
    GPT2LMHeadModel,
    LlamaConfig,
    LlamaForCausalLM,
)

from gptjax import sharding
from gptjax.chat_template import completion_text, render
from gptjax.checkpoint import Checkpointer
from gptjax.cli import main
from gptjax.data.corpus import builtin_documents
from gptjax.hf.exporter import export_hf
from gptjax.hf.importer import IMPORT_MESH, TensorStore, import_hf, write_params_checkpoint
from gptjax.hf.safetensors_io import SafetensorsFile, write_safetensors
from gptjax.hf.tokenizer import HFTokenizer
from gptjax.inference.load import load_model
from gptjax.metrics import read_metrics
from gptjax.model import ModelConfig, Transformer
from gptjax.tokenizer import CHAT_TOKENS, load_tokenizer, tokenizer_from_bytes, train_tokenizer

ROOT = Path(__file__).resolve().parents[1]
TOLERANCE = 1e-4  # max |logits difference|, float32 on both sides
TEXT = "Return the list of a sloop's masts; json.dumps(x) -> str"
GPT2_VOCAB = 512  # = the tokenizer's size, as GPT-2's 50257 is: no spare embedding rows


def _redraw(model: torch.nn.Module, seed: int) -> None:
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            noise = torch.randn(p.shape, generator=generator)
            if p.ndim == 1 and name.endswith("weight"):  # norm scales
                p.copy_(1 + 0.3 * noise)
            elif p.ndim == 1:
                p.copy_(0.1 * noise)
            else:
                p.copy_((0.5 if "wte" in name or "embed" in name else 0.2) * noise)


def _gpt2_tokenizer(out: Path) -> None:
    from tokenizers import Tokenizer as RustTokenizer
    from tokenizers import decoders, models, pre_tokenizers, trainers

    tk = RustTokenizer(models.BPE())
    tk.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tk.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=GPT2_VOCAB,
        special_tokens=["<|endoftext|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tk.train_from_iterator(builtin_documents()[:200], trainer)
    tk.save(str(out / "tokenizer.json"))
    end = "<|endoftext|>"
    config = {"bos_token": end, "eos_token": end, "unk_token": end, "model_max_length": 64}
    (out / "tokenizer_config.json").write_text(json.dumps(config))


def _llama_tokenizer(out: Path) -> None:
    """A Llama-2 style sentencepiece model: unk 0, bos 1, eos 2 and no pad token."""
    import io

    import sentencepiece as spm

    writer = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(builtin_documents()[:50]),
        model_writer=writer,
        vocab_size=400,
        model_type="bpe",
        byte_fallback=True,
        character_coverage=0.9995,
        unk_id=0,
        bos_id=1,
        eos_id=2,
        pad_id=-1,
        minloglevel=2,
    )
    (out / "tokenizer.model").write_bytes(writer.getvalue())


@pytest.fixture(scope="module")
def hf_dirs(tmp_path_factory):
    """{"gpt2": dir, "llama": dir} of saved random models with their tokenizers."""
    root = tmp_path_factory.mktemp("hf")
    torch.manual_seed(0)
    gpt2 = GPT2LMHeadModel(
        GPT2Config(
            vocab_size=GPT2_VOCAB,
            n_positions=64,
            n_embd=32,
            n_layer=2,
            n_head=4,
            bos_token_id=0,
            eos_token_id=0,
        )
    )
    llama = LlamaForCausalLM(
        LlamaConfig(
            vocab_size=416,
            hidden_size=32,
            intermediate_size=48,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=2,
            max_position_embeddings=64,
            tie_word_embeddings=False,
            rope_theta=500_000.0,
            rms_norm_eps=1e-5,
            bos_token_id=1,
            eos_token_id=2,
        )
    )
    dirs = {"gpt2": root / "gpt2", "llama": root / "llama"}
    for seed, (family, model) in enumerate((("gpt2", gpt2), ("llama", llama))):
        _redraw(model, seed)
        # Llama in shards with an index file, as large hub models are stored.
        shard = "20KB" if family == "llama" else "5GB"
        model.save_pretrained(dirs[family], max_shard_size=shard)
    _gpt2_tokenizer(dirs["gpt2"])
    _llama_tokenizer(dirs["llama"])
    return dirs


@pytest.fixture(scope="module")
def imported(hf_dirs, tmp_path_factory):
    root = tmp_path_factory.mktemp("imported")
    return {
        family: import_hf(path, root / family, log=lambda *_: None)
        for family, path in hf_dirs.items()
    }


def _ids(vocab: int) -> np.ndarray:
    return np.random.default_rng(0).integers(0, vocab, (2, 24))


def _transformers_logits(path, ids) -> np.ndarray:
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()
    with torch.no_grad():
        return model(torch.tensor(ids)).logits.numpy()


def _gptjax_logits(workdir, ids) -> np.ndarray:
    loaded = load_model(workdir)  # the path `gptjax sample/chat/eval` take
    with loaded.activated():
        model = nnx.merge(loaded.graphdef, loaded.params)
        return np.asarray(jax.jit(lambda x: model(x))(ids))


@pytest.mark.parametrize("family", ["gpt2", "llama"])
def test_imported_model_computes_the_logits_of_transformers(family, hf_dirs, imported):
    result = imported[family]
    ids = _ids(result.tokenizer_vocab)
    expected = _transformers_logits(hf_dirs[family], ids)
    got = _gptjax_logits(result.workdir, ids)
    difference = float(np.abs(got - expected).max())
    print(f"import {family}: max |logits difference| {difference:.2e}")
    assert np.abs(expected).max() > 3  # the comparison is not of near-zero numbers
    assert difference < TOLERANCE


def test_import_reads_gqa_rope_untied_and_the_tokenizer(imported):
    cfg = imported["llama"].model_config
    assert (cfg.num_heads, cfg.num_kv_heads, cfg.head_dim) == (4, 2, 8)
    assert (cfg.rope_theta, cfg.norm_eps, cfg.tie_embeddings) == (500_000.0, 1e-5, False)
    assert imported["gpt2"].model_config.tie_embeddings


def _native_checkpoint(family: str, workdir: Path, tok_dir: Path, phase: str = "pretrain") -> None:
    """A model created in gptjax (random, perturbed) saved as a checkpoint of `phase`, with a
    gptjax sentencepiece tokenizer."""
    shape = dict(
        vocab_size=448, num_layers=2, num_heads=4, embed_dim=32, mlp_dim=64, max_seq_len=64
    )
    if family == "gpt2":
        cfg = ModelConfig.gpt2(**shape)
    else:
        # Tied here; the imported Llama is untied, so both heads are exported.
        cfg = ModelConfig.llama(
            **shape, num_kv_heads=2, rope_theta=20_000.0, norm_eps=1e-6, tie_embeddings=True
        )
    params = nnx.state(Transformer(cfg, rngs=nnx.Rngs(3)))
    leaves, treedef = jax.tree.flatten(params)
    keys = jax.random.split(jax.random.key(4), len(leaves))
    leaves = [x + 0.2 * jax.random.normal(k, x.shape) for x, k in zip(leaves, keys, strict=True)]
    mesh = sharding.make_mesh(IMPORT_MESH)
    _, shardings = sharding.plan_state(lambda: params, mesh, sharding.DEFAULT_RULES)
    params = jax.device_put(jax.tree.unflatten(treedef, leaves), shardings)
    tokenizer = train_tokenizer(builtin_documents()[:100], tok_dir, vocab_size=400)
    write_params_checkpoint(
        workdir, cfg, params, tokenizer, mesh, sharding.DEFAULT_RULES, phase=phase
    )


@pytest.mark.parametrize("family", ["gpt2", "llama"])
def test_exported_gptjax_model_loads_in_transformers_with_the_same_logits(family, tmp_path):
    _native_checkpoint(family, tmp_path / "run", tmp_path / "tok")
    out = tmp_path / "hf"
    export_hf(tmp_path / "run", out, log=lambda *_: None)
    model, info = AutoModelForCausalLM.from_pretrained(out, output_loading_info=True)
    assert type(model).__name__ == {"gpt2": "GPT2LMHeadModel", "llama": "LlamaForCausalLM"}[family]
    assert not any(info.values()), info  # missing, unexpected, mismatched keys, errors
    ids = _ids(400)
    difference = float(
        np.abs(_gptjax_logits(tmp_path / "run", ids) - _transformers_logits(out, ids)).max()
    )
    print(f"export {family}: max |logits difference| {difference:.2e}")
    assert difference < TOLERANCE
    # The gptjax sentencepiece tokenizer goes along and encodes the same in transformers.
    tokenizer = load_tokenizer(tmp_path / "tok")
    assert AutoTokenizer.from_pretrained(out)(TEXT, add_special_tokens=False)["input_ids"] == (
        tokenizer.encode(TEXT)
    )
    # A pretrained checkpoint gets no chat template (though its tokenizer has the role
    # tokens), and its continuations end at eos alone.
    assert not (out / "chat_template.jinja").exists()
    assert AutoTokenizer.from_pretrained(out).chat_template is None
    generation = json.loads((out / "generation_config.json").read_text())
    assert generation["eos_token_id"] == tokenizer.eos_id


CONVERSATIONS = {
    "one user turn": ([{"role": "user", "content": "What is a sloop?"}], True),
    "system and multi-turn": (
        [
            {"role": "system", "content": "Answer in one line."},
            {"role": "user", "content": "Name a mast."},
            {"role": "assistant", "content": "The mainmast."},
            {"role": "user", "content": "And another?"},
        ],
        True,
    ),
    "whole conversation": (
        [
            {"role": "user", "content": "json.dumps(x) -> ?"},
            {"role": "assistant", "content": "a str"},
        ],
        False,
    ),
}


def _hf_chat_ids(tokenizer, messages, add_generation_prompt) -> list[int]:
    return list(
        tokenizer.apply_chat_template(
            messages, add_generation_prompt=add_generation_prompt, tokenize=True, return_dict=False
        )
    )


@pytest.fixture(scope="module")
def exported_chat(tmp_path_factory):
    """(gptjax workdir, export dir) of a Llama-style SFT checkpoint with gptjax's tokenizer."""
    root = tmp_path_factory.mktemp("chat")
    _native_checkpoint("llama", root / "run", root / "tok", phase="sft")
    export_hf(root / "run", root / "hf", log=lambda *_: None)
    return root / "run", root / "hf"


@pytest.mark.parametrize("case", CONVERSATIONS)
def test_exported_chat_template_gives_gptjax_prompt_ids(case, exported_chat):
    workdir, out = exported_chat
    messages, add_generation_prompt = CONVERSATIONS[case]
    expected, _ = render(
        load_model(workdir).tokenizer, messages, add_generation_prompt=add_generation_prompt
    )
    hf_tokenizer = AutoTokenizer.from_pretrained(out)
    assert _hf_chat_ids(hf_tokenizer, messages, add_generation_prompt) == expected


def test_exported_chat_model_generate_stops_at_the_end_of_turn(exported_chat):
    workdir, out = exported_chat
    tok = load_model(workdir).tokenizer
    end = tok.token_id("<|end|>")
    model = AutoModelForCausalLM.from_pretrained(out)
    assert model.generation_config.eos_token_id == [tok.eos_id, end]
    assert model.generation_config.pad_token_id == tok.pad_id
    # Make <|end|> the greedy choice from the third new token on: generate must stop there.
    prompt = torch.tensor(
        [render(tok, CONVERSATIONS["one user turn"][0], add_generation_prompt=True)[0]]
    )
    steps = []

    def push_end(module, inputs, logits):
        steps.append(None)
        if len(steps) >= 3:
            logits[..., -1, end] += 1e4
        return logits

    model.lm_head.register_forward_hook(push_end)
    new = model.generate(prompt, do_sample=False, max_new_tokens=20)[0, prompt.shape[1] :]
    assert len(new) == 3 and int(new[-1]) == end


def test_exported_chat_model_answers_greedily_as_gptjax_does(exported_chat):
    from gptjax.chat_template import prompt_ids
    from gptjax.generation import generate

    workdir, out = exported_chat
    loaded = load_model(workdir)
    question = CONVERSATIONS["one user turn"][0][0]["content"]
    (prompt,), stops = prompt_ids(loaded.tokenizer, [question], chat=True)
    with loaded.activated():
        (expected,) = generate(
            loaded.graphdef, loaded.params, [prompt], max_new_tokens=12, stop_ids=stops
        )
    hf_tokenizer = AutoTokenizer.from_pretrained(out)
    hf_prompt = hf_tokenizer.apply_chat_template(
        [{"role": "user", "content": question}],
        add_generation_prompt=True,
        return_tensors="pt",
        return_dict=True,
    )["input_ids"]
    model = AutoModelForCausalLM.from_pretrained(out)
    new = model.generate(hf_prompt, do_sample=False, max_new_tokens=12)[0, len(prompt) :].tolist()
    if new and new[-1] in stops:  # transformers keeps the eos it stopped at; gptjax drops it
        new = new[:-1]
    assert new == expected


def test_an_exported_chat_model_imports_back_as_a_chat_model(
    exported_chat, tmp_path, capsys, monkeypatch
):
    workdir, out = exported_chat
    result = import_hf(out, tmp_path / "back", log=lambda *_: None)
    assert result.phase == "sft" and "answers as a chat model" in result.describe()[1]
    loaded = load_model(tmp_path / "back")
    assert loaded.is_chat
    original, hf_tokenizer = load_model(workdir).tokenizer, AutoTokenizer.from_pretrained(out)
    for messages, add_generation_prompt in CONVERSATIONS.values():
        ids, _ = render(loaded.tokenizer, messages, add_generation_prompt=add_generation_prompt)
        assert ids == render(original, messages, add_generation_prompt=add_generation_prompt)[0]
    # `sample` asks the prompt as a user turn by default, with the ids transformers renders.
    seen = []

    def generate(graphdef, params, prompts, **settings):
        seen.extend(prompts)
        return [[] for _ in prompts]

    monkeypatch.setattr(importlib.import_module("gptjax.generation"), "generate", generate)
    assert main(["sample", str(tmp_path / "back"), "--prompt", "What is a sloop?"]) == 0
    assert capsys.readouterr().out.startswith("--- What is a sloop?\n")
    messages = CONVERSATIONS["one user turn"][0]
    assert [list(p) for p in seen] == [_hf_chat_ids(hf_tokenizer, messages, True)]


FOREIGN_TEMPLATE = (  # ChatML, as Qwen and many others ship it
    "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\\n' + "
    "message['content'] + '<|im_end|>\\n' }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)


@pytest.mark.parametrize("where", ["tokenizer_config.json", "chat_template.jinja"])
def test_a_foreign_template_without_the_model_end_token_is_kept_and_noted_but_not_applied(
    where, hf_dirs, tmp_path
):
    """ChatML over a GPT-2 tokenizer that has no <|im_end|>: its turns never end at the
    model's <|endoftext|>. (Models that chat in their own template: test_hf_own_template.py.)"""
    model_dir = tmp_path / "model"
    shutil.copytree(hf_dirs["gpt2"], model_dir)
    if where == "chat_template.jinja":
        (model_dir / where).write_text(FOREIGN_TEMPLATE)
    else:
        config = json.loads((model_dir / where).read_text())
        (model_dir / where).write_text(json.dumps(config | {"chat_template": FOREIGN_TEMPLATE}))
    lines = []
    result = import_hf(model_dir, tmp_path / "run", log=lines.append)
    assert result.phase == "pretrain" and not load_model(tmp_path / "run").is_chat
    notes = [line for line in lines if line.startswith("note:")]
    assert len(notes) == 1 and "closes no turn with an end token" in notes[0], notes
    assert "<|endoftext|>" in notes[0]
    export_hf(tmp_path / "run", tmp_path / "hf", log=lambda *_: None)
    assert AutoTokenizer.from_pretrained(tmp_path / "hf").chat_template == FOREIGN_TEMPLATE


def test_a_gptjax_finetuned_chat_model_exports_gptjax_template_over_a_foreign_one(
    hf_dirs, tmp_path
):
    model_dir = tmp_path / "model"
    shutil.copytree(hf_dirs["gpt2"], model_dir)
    config = json.loads((model_dir / "tokenizer_config.json").read_text())
    config["chat_template"] = FOREIGN_TEMPLATE
    (model_dir / "tokenizer_config.json").write_text(json.dumps(config))
    (model_dir / "chat_template.jinja").write_text(FOREIGN_TEMPLATE)
    import_hf(
        model_dir, tmp_path / "run", add_chat_tokens=True, vocab_size=640, log=lambda *_: None
    )
    # As SFT would leave it: the same model recorded as a chat checkpoint.
    loaded = load_model(tmp_path / "run", mesh=IMPORT_MESH)
    mesh, rules = sharding.make_mesh(IMPORT_MESH), sharding.DEFAULT_RULES
    cfg, tok = loaded.model_config, loaded.tokenizer
    write_params_checkpoint(tmp_path / "sft", cfg, loaded.params, tok, mesh, rules, phase="sft")
    export_hf(tmp_path / "sft", tmp_path / "hf", log=lambda *_: None)
    assert "chat_template" not in json.loads(
        (tmp_path / "hf" / "tokenizer_config.json").read_text()
    )
    hf_tokenizer = AutoTokenizer.from_pretrained(tmp_path / "hf")
    messages, add_generation_prompt = CONVERSATIONS["system and multi-turn"]
    expected, _ = render(tok, messages, add_generation_prompt=add_generation_prompt)
    assert _hf_chat_ids(hf_tokenizer, messages, add_generation_prompt) == expected


def _tensors(path: Path) -> dict[str, np.ndarray]:
    store = TensorStore(path)
    files = {name: source for name, source in store.where.items()}
    return {name: np.asarray(files[name].read(name)) for name in store.names()}


@pytest.mark.parametrize("family", ["gpt2", "llama"])
def test_import_then_export_reproduces_every_tensor_bit_for_bit(
    family, hf_dirs, imported, tmp_path
):
    out = tmp_path / "hf"
    export_hf(imported[family].workdir, out, max_shard_bytes=30_000, log=lambda *_: None)
    _, info = AutoModelForCausalLM.from_pretrained(out, output_loading_info=True)
    assert not any(info.values()), info
    original, exported = _tensors(hf_dirs[family]), _tensors(out)
    assert sorted(original) == sorted(exported)
    for name, array in original.items():
        assert exported[name].dtype == array.dtype and exported[name].shape == array.shape
        assert exported[name].tobytes() == array.tobytes(), name
    ours = load_tokenizer(imported[family].workdir / "tokenizer").encode(TEXT)
    assert AutoTokenizer.from_pretrained(out)(TEXT, add_special_tokens=False)["input_ids"] == ours
    # Re-importing the export (transformers-4 style config.json) gives the same parameters.
    again = import_hf(out, tmp_path / "again", log=lambda *_: None)
    assert again.model_config == imported[family].model_config
    assert _param_fingerprints(tmp_path / "again") == _param_fingerprints(imported[family].workdir)


def _param_fingerprints(workdir: Path) -> dict:
    with Checkpointer(workdir, read_only=True) as checkpointer:
        return checkpointer.metadata(0)["fingerprints"]["params"]


def test_pytorch_bin_weights_import_like_safetensors(hf_dirs, imported, tmp_path):
    source = tmp_path / "bin"
    source.mkdir()
    model = AutoModelForCausalLM.from_pretrained(hf_dirs["gpt2"])
    # transformers 5 only saves safetensors; this is the file older versions wrote.
    torch.save(model.state_dict(), source / "pytorch_model.bin")
    for name in ("config.json", "tokenizer.json", "tokenizer_config.json"):
        shutil.copy(hf_dirs["gpt2"] / name, source / name)
    import_hf(source, tmp_path / "run", log=lambda *_: None)
    assert _param_fingerprints(tmp_path / "run") == _param_fingerprints(imported["gpt2"].workdir)


def test_hf_tokenizer_encodes_like_transformers_and_survives_a_checkpoint(hf_dirs, imported):
    expected = AutoTokenizer.from_pretrained(hf_dirs["gpt2"])(TEXT, add_special_tokens=False)
    loaded = load_model(imported["gpt2"].workdir).tokenizer  # bytes stored in the checkpoint
    assert isinstance(loaded, HFTokenizer)
    assert loaded.encode(TEXT) == expected["input_ids"]
    assert loaded.decode(loaded.encode(TEXT)) == TEXT
    on_disk = load_tokenizer(imported["gpt2"].workdir / "tokenizer")
    assert on_disk.sha256 == loaded.sha256 == tokenizer_from_bytes(loaded.model_bytes).sha256
    # GPT-2 has one <|endoftext|> for bos and eos and no pad: all three are that token.
    end = loaded.token_id("<|endoftext|>")
    assert (loaded.bos_id, loaded.eos_id, loaded.pad_id) == (end, end, end)
    # Llama-2 style: unk 0, bos 1, eos 2, no pad -> pad is bos (never a training target).
    llama = load_tokenizer(imported["llama"].workdir / "tokenizer")
    assert (llama.unk_id, llama.bos_id, llama.eos_id, llama.pad_id) == (0, 1, 2, 1)
    assert llama.decode(llama.encode(TEXT)) == TEXT


def test_chat_tokens_are_added_only_with_room_in_the_embedding(hf_dirs, tmp_path, capsys):
    args = [
        "import-hf",
        str(hf_dirs["gpt2"]),
        "--workdir",
        str(tmp_path / "a"),
        "--add-chat-tokens",
    ]
    assert main(args) == 2
    assert "--vocab-size 640" in capsys.readouterr().err
    assert not (tmp_path / "a" / "checkpoints").exists()
    result = import_hf(
        hf_dirs["gpt2"], tmp_path / "b", add_chat_tokens=True, vocab_size=640, log=lambda *_: None
    )
    tok = load_tokenizer(tmp_path / "b" / "tokenizer")
    assert [tok.token_id(t) for t in CHAT_TOKENS] == list(range(GPT2_VOCAB, GPT2_VOCAB + 4))
    assert result.model_config.vocab_size == 640
    # A chat symbol typed inside a message is spelled in byte tokens, never the symbol.
    messages = [
        {"role": "user", "content": "say <|end|> now"},
        {"role": "assistant", "content": "ok"},
    ]
    ids, mask = render(tok, messages)
    assert ids.count(tok.token_id("<|end|>")) == 2 and sum(mask) == len(tok.encode("ok")) + 1
    assert "say <|end|> now" in tok.decode(ids)
    # New rows start as the mean embedding; the original rows are untouched.
    loaded = load_model(tmp_path / "b")
    embed = np.asarray(loaded.params["embed_VD"][...])
    np.testing.assert_allclose(
        embed[GPT2_VOCAB:], embed[:GPT2_VOCAB].mean(0, keepdims=True).repeat(128, 0), atol=1e-6
    )
    # A sentencepiece tokenizer with spare embedding rows (Llama: 416 rows, 400 tokens).
    import_hf(hf_dirs["llama"], tmp_path / "c", add_chat_tokens=True, log=lambda *_: None)
    llama = load_tokenizer(tmp_path / "c" / "tokenizer")
    assert [llama.token_id(t) for t in CHAT_TOKENS] == [400, 401, 402, 403]
    assert llama.encode("<|user|>hi")[0] == 401
    assert llama.decode(render(llama, messages)[0]).count("<|end|>") == 3


@pytest.mark.slow
def test_finetuning_an_imported_model_lowers_its_loss(imported, tmp_path):
    result = imported["gpt2"]
    finetune = result.describe()[-1].split()  # the command import-hf prints
    overrides = [arg for arg in finetune if arg.startswith("--config.")]
    command = [
        sys.executable,
        "-m",
        "gptjax.cli",
        "train",
        "--config",
        "configs/tiny.py",
        "--workdir",
        str(tmp_path / "ft"),
        *overrides,
        "--config.data.seq_len=64",
        "--config.train.steps=12",
        "--config.train.log_every=1",
        "--config.train.eval_every=12",
        "--config.train.eval_batches=1",
        "--config.optim.warmup_steps=2",
        "--config.sample.max_new_tokens=0",
        "--config.checkpoint.save_every=12",
    ]
    run = subprocess.run(command, cwd=ROOT, env=subprocess_env(), capture_output=True, text=True)
    assert run.returncode == 0, run.stderr[-3000:]
    assert "starting from the parameters of" in run.stdout + run.stderr
    losses = [r["loss"] for r in read_metrics(tmp_path / "ft" / "metrics.jsonl") if "loss" in r]
    assert len(losses) == 12
    assert np.mean(losses[-3:]) < np.mean(losses[:3]) - 0.5, losses


def _edit_config(path: Path, **changes) -> None:
    config = json.loads((path / "config.json").read_text())
    (path / "config.json").write_text(json.dumps(config | changes))


def _drop_tensor(path: Path, name: str) -> None:
    index = json.loads((path / "model.safetensors.index.json").read_text())
    file = path / index["weight_map"][name]
    reader = SafetensorsFile(file)
    kept = [(n, np.array(reader.read(n))) for n in reader.entries if n != name]
    write_safetensors(file, kept, reader.metadata)


ERRORS = {
    "unknown model_type": (
        "llama",
        lambda p: _edit_config(p, model_type="mistral"),
        "model_type 'mistral'",
    ),
    "rope scaling (transformers 5)": (
        "llama",
        lambda p: _edit_config(p, rope_parameters={"rope_type": "llama3", "rope_theta": 1e4}),
        "rope_parameters.rope_type='llama3' is not implemented",
    ),
    "rope scaling (transformers 4)": (
        "llama",
        lambda p: _edit_config(
            p, rope_parameters=None, rope_theta=1e4, rope_scaling={"type": "linear", "factor": 2}
        ),
        "rope_scaling.rope_type='linear' is not implemented",
    ),
    "missing tensor": (
        "llama",
        lambda p: _drop_tensor(p, "model.layers.1.mlp.up_proj.weight"),
        "tensor model.layers.1.mlp.up_proj.weight is missing",
    ),
    "wrong shape": ("llama", lambda p: _edit_config(p, intermediate_size=40), "has shape (48, 32)"),
    "exact gelu": (
        "gpt2",
        lambda p: _edit_config(p, activation_function="gelu"),
        "activation_function='gelu'",
    ),
}


@pytest.mark.parametrize("case", list(ERRORS))
def test_unsupported_models_exit_2_naming_the_cause_and_write_nothing(
    case, hf_dirs, tmp_path, capsys
):
    family, edit, message = ERRORS[case]
    source = tmp_path / "model"
    shutil.copytree(hf_dirs[family], source)
    edit(source)
    assert main(["import-hf", str(source), "--workdir", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1, err
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("head", ["different", "equal"])
def test_a_tied_config_with_a_stored_head_imports_as_transformers_loads_it(head, hf_dirs, tmp_path):
    """tie_word_embeddings=true, and the file also holds lm_head.weight: transformers 5 keeps
    a different head apart from the embedding (untied), an equal one tied."""
    source = tmp_path / "model"
    shutil.copytree(hf_dirs["gpt2"], source)
    reader = SafetensorsFile(source / "model.safetensors")
    tensors = [(name, np.array(reader.read(name))) for name in reader.entries]
    embed = dict(tensors)["transformer.wte.weight"]
    stored = embed + 0.5 if head == "different" else embed
    write_safetensors(source / "model.safetensors", [*tensors, ("lm_head.weight", stored)], {})
    notes = []
    result = import_hf(source, tmp_path / "run", log=notes.append)
    loaded = AutoModelForCausalLM.from_pretrained(source)
    tied = loaded.lm_head.weight.data_ptr() == loaded.get_input_embeddings().weight.data_ptr()
    assert tied == (head == "equal")  # what the installed transformers does, checked here
    assert result.model_config.tie_embeddings == tied
    untied_notes = [n for n in notes if n.startswith("note:") and "imported untied" in n]
    assert len(untied_notes) == (0 if tied else 1), notes
    ids = _ids(result.tokenizer_vocab)
    difference = np.abs(_gptjax_logits(result.workdir, ids) - _transformers_logits(source, ids))
    assert float(difference.max()) < TOLERANCE


def test_sample_continues_a_llama_prompt_with_the_space_its_first_piece_holds(
    imported, tmp_path, capsys, monkeypatch
):
    """Llama-2's sentencepiece encodes " return" as "▁return", whose space decoding drops at
    the start of a text: `sample` must print decode(prompt + new) minus decode(prompt)."""
    tok = load_tokenizer(imported["llama"].workdir / "tokenizer")
    new = tok.encode("return x")  # ["▁return", "▁x"]: decoded alone, "return x"
    assert tok.decode(new) == "return x"

    def generate(graphdef, params, prompts, **settings):
        return [list(new) for _ in prompts]

    monkeypatch.setattr(importlib.import_module("gptjax.generation"), "generate", generate)
    workdir = str(imported["llama"].workdir)
    assert main(["sample", workdir, "--prompt", "def f(x):", "--template", "raw"]) == 0
    assert capsys.readouterr().out == "---\ndef f(x): return x\n"


def test_completion_text_of_a_chat_answer_and_of_a_continuation(imported):
    """A chat answer is a message of its own, encoded alone: its first piece's space is no
    part of it. A byte-level BPE (GPT-2) keeps spaces in its pieces either way."""
    tok = load_tokenizer(imported["llama"].workdir / "tokenizer")
    prompt, new = [tok.bos_id, *tok.encode("def f(x):")], tok.encode("return x")
    assert completion_text(tok, prompt, new, chat=False) == " return x"
    assert completion_text(tok, prompt, new, chat=True) == "return x"
    gpt2 = load_tokenizer(imported["gpt2"].workdir / "tokenizer")
    prompt, new = [gpt2.bos_id, *gpt2.encode("def f(x):")], gpt2.encode(" return x")
    assert completion_text(gpt2, prompt, new, chat=False) == " return x"


TOKENIZER_ERRORS = {  # file -> (content, message); each was a traceback once
    "tokenizer_config.json a list": ("tokenizer_config.json", "[1]", "holds a JSON list"),
    "tokenizer.json not JSON": (
        "tokenizer.json",
        "{bad",
        "tokenizer.json is not a Hugging Face tokenizer.json: key must be a string",
    ),
    "tokenizer.json a list": ("tokenizer.json", "[1, 2]", "invalid type: sequence"),
    "tokenizer.json binary": ("tokenizer.json", b"\xff\xfe\x00", "is not readable text"),
}


@pytest.mark.parametrize("case", list(TOKENIZER_ERRORS))
def test_a_damaged_tokenizer_file_exits_65_in_one_line(case, hf_dirs, tmp_path, capsys):
    name, content, message = TOKENIZER_ERRORS[case]
    source = tmp_path / "model"
    shutil.copytree(hf_dirs["gpt2"], source)
    path = source / name
    path.write_bytes(content) if isinstance(content, bytes) else path.write_text(content)
    assert main(["import-hf", str(source), "--workdir", str(tmp_path / "run")]) == 65
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1, err
    assert not (tmp_path / "run").exists()
