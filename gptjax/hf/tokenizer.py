"""A Hugging Face model directory's tokenizer read into a gptjax `HFTokenizer`, and written back.

Special-token policy (gptjax needs bos, eos and a pad that is never a training target):
  bos, eos  the model's own (tokenizer_config.json, special_tokens_map.json, then config.json);
            no bos means bos = eos (GPT-2 has one `<|endoftext|>` for both).
  pad       the model's pad token when it has one that differs from eos, else the bos id.
            Hugging Face often pads with eos, but gptjax masks pad targets out of the loss and
            a model must learn to emit eos; bos targets are never trained, so reusing it is free.
  chat      `<|system|> <|user|> <|assistant|> <|end|>` are used when the vocabulary has them;
            `add_chat_tokens=True` appends the missing ones after the last id. That makes the
            tokenizer larger than the Hugging Face vocabulary, so the model's embedding needs
            the rows (`gptjax import-hf --vocab-size`); nothing is ever added silently.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Sequence

from etils import epath

from gptjax.errors import DataError
from gptjax.hf.chat import TEMPLATE_FILE
from gptjax.paths import PathLike, as_path
from gptjax.tokenizer import CHAT_TOKENS, Tokenizer
from gptjax.tokenizer.hf_bundle import (
    FORMAT,
    HF_JSON,
    HF_SPM,
    HFTokenizer,
    SentencePieceBackend,
    TokenizersBackend,
)

HF_CONFIG_FILES = ("tokenizer_config.json", "special_tokens_map.json")
# Kept in the bundle as they came, so export-hf writes them back (the chat template included).
HF_KEPT_FILES = (*HF_CONFIG_FILES, TEMPLATE_FILE)


def _read_json(path: epath.Path) -> dict:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise DataError(f"{path} is not readable JSON: {error}") from None
    if not isinstance(data, dict):
        raise DataError(f"{path} holds a JSON {type(data).__name__}, not an object of settings")
    return data


def _tokenizers_backend(path: epath.Path) -> TokenizersBackend:
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, ValueError) as error:
        raise DataError(f"{path} is not readable text: {error}") from None
    try:
        return TokenizersBackend(text)
    except DataError:
        raise
    except Exception as error:  # the tokenizers library raises a bare Exception for bad JSON
        reason = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise DataError(f"{path} is not a Hugging Face tokenizer.json: {reason}") from None


def _declared(configs: Sequence[dict], key: str) -> str | None:
    """A special token's text as tokenizer_config.json / special_tokens_map.json spell it."""
    for config in configs:
        value = config.get(key)
        if isinstance(value, dict):
            value = value.get("content")
        if isinstance(value, str):
            return value
    return None


def _special_ids(backend, configs: Sequence[dict], model_config: dict, where: epath.Path) -> dict:
    def resolve(name: str) -> int | None:
        piece = _declared(configs, f"{name}_token")
        if piece is not None:
            found = backend.token_to_id(piece)
            if found is None:
                raise DataError(f"{where}: {name}_token {piece!r} is not in the vocabulary")
            return found
        value = model_config.get(f"{name}_token_id")
        if isinstance(value, list):  # Llama 3 lists several end tokens; the first is eos
            value = value[0] if value else None
        if value is None and isinstance(backend, SentencePieceBackend):
            value = getattr(backend.sp, f"{name}_id")()
        return value if isinstance(value, int) and 0 <= value < backend.size else None

    eos = resolve("eos")
    if eos is None:
        raise DataError(
            f"{where}: the tokenizer declares no eos token (tokenizer_config.json eos_token or "
            "config.json eos_token_id); gptjax needs one to end documents and answers"
        )
    bos = resolve("bos")
    bos = eos if bos is None else bos
    pad = resolve("pad")
    pad = bos if pad is None or pad == eos else pad
    return {"bos": bos, "eos": eos, "pad": pad, "unk": resolve("unk")}


def read_hf_tokenizer(
    model_dir: PathLike, model_config: dict, *, add_chat_tokens: bool = False
) -> HFTokenizer:
    """The tokenizer of a Hugging Face model directory: tokenizer.json, else tokenizer.model."""
    model_dir = as_path(model_dir, "model directory")
    present = [name for name in HF_KEPT_FILES if (model_dir / name).is_file()]
    configs = [_read_json(model_dir / name) for name in present if name in HF_CONFIG_FILES]
    files = {name: (model_dir / name).read_text("utf-8") for name in present}
    if (model_dir / HF_JSON).is_file():
        backend = _tokenizers_backend(model_dir / HF_JSON)
        kind, model = "tokenizers", backend.text
    elif (model_dir / HF_SPM).is_file():
        proto = (model_dir / HF_SPM).read_bytes()
        kind, model = "sentencepiece", base64.b64encode(proto).decode("ascii")
        backend = SentencePieceBackend(proto)
    else:
        raise DataError(
            f"{model_dir} has no tokenizer ({HF_JSON} or {HF_SPM}); copy the model's tokenizer "
            "files next to its config.json"
        )
    added: dict[str, int] = {}
    missing = [p for p in CHAT_TOKENS if backend.token_to_id(p) is None]
    if add_chat_tokens and missing:
        if kind == "tokenizers":
            backend = backend.with_tokens(missing)
            model = backend.text
        else:
            added = {p: backend.size + i for i, p in enumerate(missing)}
    special = _special_ids(backend, configs, model_config, model_dir)
    bundle = {"format": FORMAT, "backend": kind, "model": model, "special": special}
    return HFTokenizer.from_bundle(bundle | {"added": added, "files": files})


def hf_tokenizer_files(tokenizer: Tokenizer, max_seq_len: int) -> dict[str, bytes]:
    """Files for a Hugging Face model directory that hold `tokenizer`.

    An imported tokenizer goes back as it came; a gptjax-trained sentencepiece model goes out
    as tokenizer.model with a tokenizer_config.json naming its special tokens.
    """
    if isinstance(tokenizer, HFTokenizer):
        return tokenizer.hf_files()
    sp = tokenizer._sp
    config = {
        "tokenizer_class": "LlamaTokenizer",
        "bos_token": sp.id_to_piece(tokenizer.bos_id),
        "eos_token": sp.id_to_piece(tokenizer.eos_id),
        "pad_token": sp.id_to_piece(tokenizer.pad_id),
        "unk_token": sp.id_to_piece(sp.unk_id()),
        "additional_special_tokens": [p for p in CHAT_TOKENS if sp.piece_to_id(p) != sp.unk_id()],
        "add_bos_token": True,
        "add_eos_token": False,
        "legacy": False,
        "add_prefix_space": False,
        "model_max_length": max_seq_len,
    }
    return {
        HF_SPM: tokenizer.model_bytes,
        "tokenizer_config.json": json.dumps(config, indent=2).encode("utf-8"),
    }
