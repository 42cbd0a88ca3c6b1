"""Tokenizers, all as Hugging Face fast tokenizers, so generators, the eval runner, lm-eval's `hf`
model, the trainer and the server count and encode tokens the same way, and `save_pretrained`
makes a model folder self-describing (`AutoTokenizer.from_pretrained(folder)` works offline):

- `byte` (default, no files): id == UTF-8 byte value, 256 ids, the norm for the tiny vocab-256
  attnlab models. Built as a byte-level BPE with no merges, using GPT-2's printable byte alphabet
  (the `tokenizers` ByteLevel convention);
- `bpe`: a byte-level BPE trained locally with `tokenizers` (cached in `<run_dir>/tokenizer` for a
  training run);
- anything else: a path to a Hugging Face tokenizer (loaded offline).

They live here, with the task generators that need them; the trainer imports them from evals
(train -> evals, never back: docs/architecture.md).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from pathlib import Path

import numpy as np
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import AutoTokenizer, PreTrainedTokenizerBase, PreTrainedTokenizerFast

EOS = "<|endoftext|>"
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "tokenizer.model", "vocab.json")


def byte_alphabet() -> dict[int, str]:
    """GPT-2's byte -> printable character map: printable Latin-1 bytes map to themselves, the rest
    to chr(256 + n) in byte order (the alphabet of `pre_tokenizers.ByteLevel`)."""
    printable = {*range(33, 127), *range(161, 173), *range(174, 256)}
    table, shifted = {}, 0
    for b in range(256):
        if b in printable:
            table[b] = chr(b)
        else:
            table[b] = chr(256 + shifted)
            shifted += 1
    return table


BYTE_VOCAB = {char: b for b, char in byte_alphabet().items()}


# Byte 0 (NUL) never occurs in the text we train or evaluate on, so it doubles as eos/pad without
# growing the vocabulary past 256 (lm-eval's `hf` model needs a pad token).
BYTE_SPECIAL = byte_alphabet()[0]


def byte_tokenizer() -> PreTrainedTokenizerFast:
    """Every UTF-8 byte is one token and its id is the byte value; no regex split, no prefix space."""
    tok = Tokenizer(models.BPE(vocab=BYTE_VOCAB, merges=[]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    tok.decoder = decoders.ByteLevel()
    return PreTrainedTokenizerFast(tokenizer_object=tok, eos_token=BYTE_SPECIAL, pad_token=BYTE_SPECIAL)


def train_bpe(
    texts: Iterable[str], vocab_size: int = 512, cache_dir: Path | None = None
) -> PreTrainedTokenizerFast:
    """Byte-level BPE trained offline on `texts`. With a cache_dir it is trained once per run dir;
    later calls (and a resumed run) load the cached tokenizer."""
    if cache_dir is None:
        return PreTrainedTokenizerFast(
            tokenizer_object=_train_bpe(texts, vocab_size), eos_token=EOS, pad_token=EOS
        )
    path = cache_dir / "tokenizer.json"
    if not path.exists():
        tok = _train_bpe(texts, vocab_size)
        cache_dir.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tok.save(str(tmp))
        tmp.replace(path)  # atomic: a killed run never leaves a half-written cache
    return PreTrainedTokenizerFast(tokenizer_file=str(path), eos_token=EOS, pad_token=EOS)


def _train_bpe(texts: Iterable[str], vocab_size: int) -> Tokenizer:
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[EOS],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),  # every byte stays encodable
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer=trainer)
    return tok


def build_tokenizer(
    kind: str, cache_dir: Path, texts: Callable[[], Iterable[str]], bpe_vocab_size: int
) -> PreTrainedTokenizerFast:
    if kind == "byte":
        return byte_tokenizer()
    if kind == "bpe":
        return train_bpe(texts(), bpe_vocab_size, cache_dir)
    return AutoTokenizer.from_pretrained(kind)  # a local folder (checked by the config)


def is_byte_tokenizer(tokenizer) -> bool:
    return len(tokenizer) == 256 and tokenizer.get_vocab() == BYTE_VOCAB


def encode(tokenizer, texts: list[str]) -> list[np.ndarray]:
    """Texts -> token ids, one int array per text; bytes directly for the byte tokenizer (same ids)."""
    if is_byte_tokenizer(tokenizer):
        return [np.frombuffer(t.encode("utf-8"), dtype=np.uint8) for t in texts]
    ids = tokenizer(texts, add_special_tokens=False)["input_ids"]
    return [np.asarray(x, dtype=np.int64) for x in ids]


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
