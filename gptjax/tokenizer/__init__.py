"""Tokenizers: gptjax's own sentencepiece models and imported Hugging Face ones, one interface."""

from gptjax.tokenizer.base import (
    BOS_ID,
    CHAT_TOKENS,
    EOS_ID,
    META_FILE,
    MODEL_FILE,
    MODEL_TYPES,
    PAD_ID,
    RESERVED_PIECES,
    UNK_ID,
    Tokenizer,
)
from gptjax.tokenizer.files import load_tokenizer, tokenizer_from_bytes
from gptjax.tokenizer.hf_bundle import HFTokenizer
from gptjax.tokenizer.sentencepiece_model import SentencePieceTokenizer, train_tokenizer
from gptjax.tokenizer.vocab import check_vocab, unigram_entropy, unigram_entropy_from_counts

__all__ = [
    "BOS_ID",
    "CHAT_TOKENS",
    "EOS_ID",
    "META_FILE",
    "MODEL_FILE",
    "MODEL_TYPES",
    "PAD_ID",
    "RESERVED_PIECES",
    "UNK_ID",
    "HFTokenizer",
    "SentencePieceTokenizer",
    "Tokenizer",
    "check_vocab",
    "load_tokenizer",
    "tokenizer_from_bytes",
    "train_tokenizer",
    "unigram_entropy",
    "unigram_entropy_from_counts",
]
