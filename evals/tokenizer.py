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

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import AutoTokenizer, PreTrainedTokenizerBase, PreTrainedTokenizerFast
from transformers.convert_slow_tokenizer import bytes_to_unicode

# Byte 0 (NUL) never occurs in the suite's text, so it doubles as eos/pad without growing the
# vocabulary past 256. Its byte-level symbol is "Ā" (U+0100): a literal "Ā" in input text is read
# as this special token instead of its two UTF-8 bytes — harmless for ASCII tasks.
BYTE_SPECIAL = bytes_to_unicode()[0]

TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "tokenizer.model", "vocab.json")


def byte_tokenizer() -> PreTrainedTokenizerFast:
    """Byte-level tokenizer: every UTF-8 byte is one token and its id is the byte value."""
    symbol = bytes_to_unicode()  # byte -> printable unicode char (GPT-2 byte-level alphabet)
    vocab = {symbol[b]: b for b in range(256)}
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    # No regex split and no prefix space: the text is mapped byte for byte.
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    tok.decoder = decoders.ByteLevel()
    return PreTrainedTokenizerFast(tokenizer_object=tok, eos_token=BYTE_SPECIAL, pad_token=BYTE_SPECIAL)


def train_bpe_tokenizer(texts: Iterable[str], vocab_size: int = 512) -> PreTrainedTokenizerFast:
    """Byte-level BPE trained offline on `texts` (GPT-2 style pre-tokenization)."""
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=["<|endoftext|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),  # any byte stays encodable
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer=trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|endoftext|>", pad_token="<|endoftext|>")


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
