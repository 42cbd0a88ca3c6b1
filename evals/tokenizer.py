"""Tokenizers for the eval suite: a byte-level one (token id == byte value, the norm for the tiny
vocab-256 attnlab models), a BPE trained locally with the `tokenizers` package, and the loader
that finds the right one for a model folder.

Every tokenizer here is a `transformers` fast tokenizer, so generators, the runner, lm-eval's `hf`
model and the trainer all count and encode tokens the same way, and `save_pretrained` makes a
model folder self-describing (`AutoTokenizer.from_pretrained(folder)` works offline).
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path

from transformers import AutoTokenizer, PreTrainedTokenizerBase, PreTrainedTokenizerFast

from ..train.tokenizer import byte_tokenizer, train_bpe

TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "tokenizer.model", "vocab.json")


def train_bpe_tokenizer(texts: Iterable[str], vocab_size: int = 512) -> PreTrainedTokenizerFast:
    """Byte-level BPE trained offline on `texts` (not cached; the trainer's tokenizer, train/tokenizer.py)."""
    return train_bpe(texts, vocab_size)


def count_tokens(tokenizer: PreTrainedTokenizerBase, text: str) -> int:
    # No BOS/EOS: lengths are those of the text itself, which is what models are fed here
    # (lm-eval's causal `hf` model also encodes without special tokens by default).
    return len(tokenizer(text, add_special_tokens=False)["input_ids"])


def load_tokenizer(*folders: str | Path) -> PreTrainedTokenizerBase:
    """The tokenizer saved in the first folder that has one; otherwise the byte tokenizer when the
    model's vocabulary is 256 (the attnlab default), else a clear error."""
    folders = tuple(Path(f) for f in folders)
    for folder in folders:
        if any((folder / name).exists() for name in TOKENIZER_FILES):
            return AutoTokenizer.from_pretrained(str(folder))
    for folder in folders:
        config = folder / "config.json"
        if config.exists() and json.loads(config.read_text()).get("vocab_size") == 256:
            return byte_tokenizer()
    raise FileNotFoundError(
        f"no tokenizer in {', '.join(map(str, folders))}: expected one of {', '.join(TOKENIZER_FILES)}, "
        "or a model with vocab_size 256 (byte-level)"
    )
