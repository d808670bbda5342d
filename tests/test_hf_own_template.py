"""An imported Hugging Face chat model chats in its own template (ChatML, Llama 3), as
transformers runs it: the same prompt ids as `apply_chat_template`, the same greedy answer as
`generate`, stopping at every end id of generation_config.json.

The models are small random LlamaForCausalLM with byte-level BPE tokenizers trained here, each
holding its template's special tokens. Greedy decoding of a random model rarely writes a stop
token, so each model's head has the rows of its first generation_config end token and of the
token it would write third swapped: the greedy answer then ends there after two tokens.
"""

import io
import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file
from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaConfig, LlamaForCausalLM

import gptjax
from gptjax.cli import main
from gptjax.data.corpus import builtin_documents
from gptjax.hf.exporter import export_hf
from gptjax.hf.importer import import_hf
from gptjax.inference.chat import ChatSession, run_chat
from gptjax.inference.load import load_model

CHATML = (  # Qwen2.5's shape: a default system turn when the conversation has none
    "{%- if messages[0]['role'] == 'system' %}"
    "{{- '<|im_start|>system\\n' + messages[0]['content'] + '<|im_end|>\\n' }}"
    "{%- else %}"
    "{{- '<|im_start|>system\\nYou are a helpful assistant.<|im_end|>\\n' }}"
    "{%- endif %}\n"
    "{%- for message in messages %}\n"
    "    {%- if not (message.role == 'system' and loop.first) %}\n"
    "        {{- '<|im_start|>' + message.role + '\\n' + message.content + '<|im_end|>\\n' }}\n"
    "    {%- endif %}\n"
    "{%- endfor %}\n"
    "{%- if add_generation_prompt %}\n"
    "    {{- '<|im_start|>assistant\\n' }}\n"
    "{%- endif %}\n"
)
LLAMA3 = (  # Meta-Llama-3-8B-Instruct's template
    "{% set loop_messages = messages %}{% for message in loop_messages %}{% set content = "
    "'<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n'+ message['content'] | "
    "trim + '<|eot_id|>' %}{% if loop.index0 == 0 %}{% set content = bos_token + content %}"
    "{% endif %}{{ content }}{% endfor %}{% if add_generation_prompt %}"
    "{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}{% endif %}"
)
KINDS = {
    # specials (in id order), tokenizer_config's named tokens, generation_config's end tokens
    "chatml": (
        ["<|endoftext|>", "<|im_start|>", "<|im_end|>"],
        {"eos_token": "<|im_end|>", "pad_token": "<|endoftext|>", "bos_token": None},
        ["<|im_end|>", "<|endoftext|>"],
        CHATML,
    ),
    "llama3": (
        ["<|begin_of_text|>", "<|end_of_text|>", "<|start_header_id|>", "<|end_header_id|>"]
        + ["<|eot_id|>"],
        {"bos_token": "<|begin_of_text|>", "eos_token": "<|eot_id|>"},
        ["<|end_of_text|>", "<|eot_id|>"],
        LLAMA3,
    ),
}
VOCAB = 384
QUESTION = "What does json.dumps return?"
CONVERSATION = [
    {"role": "system", "content": "You answer in one word."},
    {"role": "user", "content": "Name a mast of a sloop."},
    {"role": "assistant", "content": "mainmast"},
    {"role": "user", "content": "And a rope?"},
]


def _tokenizer(out: Path, docs, specials: list[str], named: dict, template: str) -> None:
    from tokenizers import Tokenizer as RustTokenizer
    from tokenizers import decoders, models, pre_tokenizers, trainers

    tk = RustTokenizer(models.BPE())
    tk.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tk.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=VOCAB,
        special_tokens=specials,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tk.train_from_iterator(docs, trainer)
    tk.save(str(out / "tokenizer.json"))
    config = {key: value for key, value in named.items() if value is not None}
    config |= {"chat_template": template, "tokenizer_class": "PreTrainedTokenizerFast"}
    (out / "tokenizer_config.json").write_text(json.dumps(config))


def _greedy_ids(model, prompt: list[int], count: int) -> list[int]:
    ids = torch.tensor([prompt])
    with torch.no_grad():
        for _ in range(count):
            ids = torch.cat([ids, model(ids).logits[:, -1].argmax(-1, keepdim=True)], dim=1)
    return ids[0, len(prompt) :].tolist()


def _swap_head_rows(model_dir: Path, a: int, b: int) -> None:
    path = model_dir / "model.safetensors"
    tensors = load_file(path)
    head = tensors["lm_head.weight"].clone()
    head[[a, b]] = head[[b, a]]
    save_file(tensors | {"lm_head.weight": head}, path, metadata={"format": "pt"})


def _hf_prompt(model_dir: Path, messages: list[dict]) -> list[int]:
    return list(
        AutoTokenizer.from_pretrained(model_dir).apply_chat_template(
            messages, add_generation_prompt=True, tokenize=True, return_dict=False
        )
    )


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """kind -> (HF model dir, gptjax workdir imported from it, the import's log lines)."""
    root, out = tmp_path_factory.mktemp("own_template"), {}
    docs = builtin_documents()[:100]  # read once: it takes seconds
    for seed, (kind, (specials, named, ends, template)) in enumerate(KINDS.items()):
        model_dir = root / kind
        model_dir.mkdir()
        _tokenizer(model_dir, docs, specials, named, template)
        tk = json.loads((model_dir / "tokenizer.json").read_text())
        special_id = {t["content"]: t["id"] for t in tk["added_tokens"]}
        torch.manual_seed(seed)
        model = LlamaForCausalLM(
            LlamaConfig(
                vocab_size=VOCAB,
                hidden_size=32,
                intermediate_size=48,
                num_hidden_layers=2,
                num_attention_heads=4,
                num_key_value_heads=2,
                max_position_embeddings=128,
                tie_word_embeddings=False,
                bos_token_id=special_id[specials[0]],
                eos_token_id=special_id[named["eos_token"]],
            )
        )
        with torch.no_grad():  # larger weights than the default init: no near-ties in argmax
            for p in model.parameters():
                if p.ndim == 2:
                    p.mul_(10.0)
        model.generation_config.eos_token_id = [special_id[t] for t in ends]
        model.save_pretrained(model_dir)
        prompt = _hf_prompt(model_dir, [{"role": "user", "content": QUESTION}])
        third = _greedy_ids(model, prompt, 3)[2]
        # Llama 3: <|end_of_text|>, which only generation_config.json names as an end id.
        _swap_head_rows(model_dir, third, special_id[ends[0]])
        lines: list[str] = []
        result = import_hf(model_dir, root / f"{kind}-run", log=lines.append)
        lines += result.describe()
        out[kind] = (model_dir, root / f"{kind}-run", lines)
    return out


@pytest.mark.parametrize("kind", KINDS)
def test_import_records_a_chat_model_with_its_template_and_end_ids(kind, models):
    model_dir, workdir, lines = models[kind]
    loaded = load_model(workdir)
    assert loaded.phase == "sft" and loaded.is_chat
    assert not any(line.startswith("note:") for line in lines)
    assert "answers as a chat model, in its own chat template" in "\n".join(lines)
    tk = AutoTokenizer.from_pretrained(model_dir)
    ends = {tk.convert_tokens_to_ids(t) for t in KINDS[kind][2]}
    assert set(loaded.chat_format.stop_ids(loaded.tokenizer)) == ends


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize(
    "messages",
    [CONVERSATION, [{"role": "user", "content": QUESTION}]],
    ids=["system and multi-turn", "one user turn"],
)
def test_prompt_ids_equal_apply_chat_template(kind, messages, models):
    model_dir, workdir, _ = models[kind]
    loaded = load_model(workdir)
    assert loaded.chat_format.prompt(loaded.tokenizer, messages) == _hf_prompt(model_dir, messages)


def _transformers_answer(model_dir: Path, messages: list[dict], budget: int) -> tuple[str, bool]:
    """(greedy answer text, whether it ended at an end id before the budget)."""
    model = AutoModelForCausalLM.from_pretrained(model_dir)
    prompt = _hf_prompt(model_dir, messages)
    out = model.generate(torch.tensor([prompt]), do_sample=False, max_new_tokens=budget)
    new = out[0, len(prompt) :].tolist()
    stopped = new[-1] in model.generation_config.eos_token_id and len(new) < budget
    return AutoTokenizer.from_pretrained(model_dir).decode(new, skip_special_tokens=True), stopped


@pytest.mark.parametrize("kind", KINDS)
def test_the_greedy_answer_is_transformers_generate_answer(kind, models, monkeypatch, capsys):
    model_dir, workdir, _ = models[kind]
    expected, stopped = _transformers_answer(model_dir, [{"role": "user", "content": QUESTION}], 8)
    assert expected and stopped  # two tokens of text, then the end of the turn
    model = gptjax.load(workdir)
    assert model.generate(QUESTION, max_new_tokens=8, temperature=0) == expected
    # `gptjax chat` (piped input), in the same template, a history kept across turns.
    monkeypatch.setattr("sys.stdin", io.StringIO(QUESTION + "\n"))
    flags = ["--temperature", "0", "--max-new-tokens", "8", "--no-repeat-ngram-size", "0"]
    assert main(["chat", str(workdir), *flags]) == 0
    assert f"assistant> {expected}\n" in capsys.readouterr().out
    session = ChatSession(load_model(workdir), temperature=0, no_repeat_ngram_size=0)
    session.max_new_tokens = 8
    session.reply(QUESTION, lambda _: None)
    follow_up = "And json.loads?"
    answer = session.reply(follow_up, lambda _: None)
    history = [*session.messages[:2], {"role": "user", "content": follow_up}]
    assert answer == _transformers_answer(model_dir, history, 8)[0]


@pytest.mark.parametrize("kind", KINDS)
def test_conversation_scoring_masks_each_answer_and_its_end_token(kind, models):
    model_dir, workdir, _ = models[kind]
    loaded = load_model(workdir)
    tok, form = loaded.tokenizer, loaded.chat_format
    answer = {"role": "assistant", "content": "a rope"}
    ids, mask = form.render(tok, [*CONVERSATION, answer])
    hf = AutoTokenizer.from_pretrained(model_dir)
    whole = hf.apply_chat_template([*CONVERSATION, answer], tokenize=True, return_dict=False)
    assert ids == list(whole)
    end = hf.convert_tokens_to_ids(KINDS[kind][1]["eos_token"])
    scored = [i for i, m in zip(ids, mask, strict=True) if m]
    assert scored == tok.encode("mainmast") + [end] + tok.encode("a rope") + [end]
    prompt, chosen, rejected = form.pair_ids(
        {"messages": CONVERSATION, "chosen": "a rope", "rejected": "a sail"}, tok
    )
    assert prompt == _hf_prompt(model_dir, CONVERSATION)
    assert (chosen, rejected) == (tok.encode("a rope") + [end], tok.encode("a sail") + [end])


def test_export_writes_the_template_and_end_ids_back(models, tmp_path):
    model_dir, workdir, _ = models["llama3"]
    export_hf(workdir, tmp_path / "hf", log=lambda *_: None)
    assert AutoTokenizer.from_pretrained(tmp_path / "hf").chat_template == LLAMA3
    generation = json.loads((tmp_path / "hf" / "generation_config.json").read_text())
    original = json.loads((model_dir / "generation_config.json").read_text())
    assert sorted(generation["eos_token_id"]) == sorted(original["eos_token_id"])


def test_a_template_that_fails_on_the_probe_leaves_a_pretrained_model(models, tmp_path):
    model_dir = tmp_path / "model"
    shutil.copytree(models["chatml"][0], model_dir)
    config = json.loads((model_dir / "tokenizer_config.json").read_text())
    refusing = "{{ raise_exception('this template only renders tool calls') }}"
    (model_dir / "tokenizer_config.json").write_text(
        json.dumps(config | {"chat_template": refusing})
    )
    lines: list[str] = []
    result = import_hf(model_dir, tmp_path / "run", log=lines.append)
    notes = [line for line in lines if line.startswith("note:")]
    assert len(notes) == 1 and "only renders tool calls" in notes[0] and "\n" not in notes[0]
    assert result.phase == "pretrain" and not load_model(tmp_path / "run").is_chat
    assert "chat_format" not in load_model(tmp_path / "run").metadata


@pytest.mark.slow  # compiles the eval step, generation and the pair scorer (~20 s)
def test_eval_scores_and_generates_in_the_model_template(models):
    from gptjax.inference.evaluate import conversation_metrics
    from gptjax.inference.preference_eval import preference_metrics

    loaded = load_model(models["chatml"][1])
    tok = loaded.tokenizer
    conversation = [*CONVERSATION, {"role": "assistant", "content": "a rope"}]
    result = conversation_metrics(
        loaded,
        [conversation],
        batch_size=8,  # the fake devices' data-parallel size
        max_batches=None,
        max_generate=1,
        max_new_tokens=4,
        show_progress=False,
    )
    # Both answers and the <|im_end|> closing each are scored, nothing else.
    assert result["answer_tokens"] == len(tok.encode("mainmast") + tok.encode("a rope")) + 2
    assert result["generated"] == 1
    pair = {"messages": CONVERSATION, "chosen": "a rope", "rejected": "a sail"}
    ranked = preference_metrics(
        loaded, [pair], reference=None, beta=0.1, batch_size=8, chat=True, show_progress=False
    )
    assert ranked["by_kind"]["all"]["pairs"] == 1 and ranked["too_long"] == 0


def test_chat_reports_a_turn_the_template_refuses_and_goes_on(models, tmp_path):
    model_dir = tmp_path / "model"
    shutil.copytree(models["chatml"][0], model_dir)
    config = json.loads((model_dir / "tokenizer_config.json").read_text())
    refuses_system = (  # Gemma's rule, over ChatML
        "{% if messages[0]['role'] == 'system' %}"
        "{{ raise_exception('System role not supported') }}{% endif %}" + CHATML
    )
    config["chat_template"] = refuses_system
    (model_dir / "tokenizer_config.json").write_text(json.dumps(config))
    import_hf(model_dir, tmp_path / "run", log=lambda *_: None)
    session = ChatSession(load_model(tmp_path / "run"), max_new_tokens=2)
    lines, written = iter(["/system Be brief.", "Hi", "/quit"]), []
    run_chat(session, lambda _: next(lines), written.append)
    text = "".join(written)
    assert "error: the model's chat template refuses this conversation: System role not" in text
    assert session.messages == []  # the refused turn was not kept
