"""Loading a tokenizer of either kind from its bytes or its directory."""

import json

from gptjax.errors import DataError
from gptjax.paths import PathLike, as_path
from gptjax.tokenizer.base import META_FILE, MODEL_FILE, Tokenizer
from gptjax.tokenizer.hf_bundle import HFTokenizer, is_bundle
from gptjax.tokenizer.sentencepiece_model import SentencePieceTokenizer


def tokenizer_from_bytes(model_bytes: bytes, *, name: str = "<bytes>") -> Tokenizer:
    """Load from serialized model bytes; `name` is what an error message calls them.

    Bytes of an imported Hugging Face tokenizer (a JSON bundle) give a `HFTokenizer`, anything
    else must be a sentencepiece model.
    """
    if is_bundle(model_bytes):
        return HFTokenizer.parse(model_bytes, name=name)
    return SentencePieceTokenizer.parse(model_bytes, name=name)


def load_tokenizer(path: PathLike) -> Tokenizer:
    """Load `path`: a directory holding tokenizer.model, or the .model file itself.

    The sha256 recorded in tokenizer.json beside it must match: a replaced or damaged model
    is refused rather than silently tokenizing differently.
    """
    path = as_path(path, "tokenizer")
    model_path = path / MODEL_FILE if path.is_dir() else path
    if not model_path.is_file():
        raise DataError(
            f"tokenizer file {model_path} not found; train one with "
            "gptjax.tokenizer.train_tokenizer or point to an existing tokenizer.model"
        )
    tokenizer = tokenizer_from_bytes(model_path.read_bytes(), name=str(model_path))
    meta_path = model_path.with_name(META_FILE)
    if meta_path.is_file():
        try:
            expected = json.loads(meta_path.read_text())["sha256"]
        except (ValueError, KeyError, TypeError):
            raise DataError(f"tokenizer metadata {meta_path} is corrupt; retrain") from None
        if expected != tokenizer.sha256:
            raise DataError(
                f"tokenizer {model_path} has sha256 {tokenizer.sha256[:12]}… but {meta_path} "
                f"records {expected[:12]}…: the model was replaced or damaged"
            )
    return tokenizer
