"""Retrieval heads on key-value recall prompts: Wu et al.'s retrieval score (probes/retrieval.py)
on prompts in the MQAR format (Zoology) that models trained on MQAR can read.

    prompt = [0] k1 v1  [0] k2 v2 ...  [0] kn vn   filler ...   kq      -> the model must answer vq

Keys come from [1, V/2) and values from [V/2, V), all distinct, as in MQAR training data; `[0]` is
the pair separator of `separator: true` runs (ProbeSettings.kv_separator). The filler between the
context and the query is drawn from the tokens that are neither a key nor a value of the prompt, so
the queried value occurs exactly once: a head whose argmax lands on it while the model writes it
copied it. Depth picks the queried pair (0: the first pair, 100: the last). Token NIAH prompts
(probes/retrieval.py) put the needle without a separator in random text, which a model trained
only on MQAR has never seen; this probe asks the same question in the model's own format.
"""

from __future__ import annotations

import zlib

import numpy as np
import torch

from .niah_tokens import NeedleSample
from .probe import ProbeSettings
from .probe_registry import register_probe
from .retrieval import RetrievalProbe
from .target import ProbeTarget


def kv_sample(vocab: int, length: int, depth: float, pairs: int, separator: bool, seed: int) -> NeedleSample:
    """One recall prompt of exactly `length` tokens (the query key last)."""
    rng = np.random.default_rng(seed)
    half = vocab // 2
    keys = rng.choice(np.arange(1, half), pairs, replace=False)
    values = rng.choice(np.arange(half, vocab), pairs, replace=False)
    width = 3 if separator else 2
    context = []
    for k, v in zip(keys.tolist(), values.tolist(), strict=True):
        context += ([0] if separator else []) + [k, v]
    used = set(keys.tolist()) | set(values.tolist())
    pool = np.array([t for t in range(vocab) if t not in used])
    filler = rng.choice(pool, length - len(context) - 1).tolist()
    q = round(depth / 100 * (pairs - 1))
    prompt = torch.tensor(context + filler + [int(keys[q])], dtype=torch.long)
    start = q * width + width - 1  # the value's position in the context
    return NeedleSample(prompt, torch.tensor([int(values[q])]), (start, start + 1), length, depth)


def kv_grid(vocab: int, max_len: int, settings: ProbeSettings, seed: int) -> list[NeedleSample]:
    """lengths × depths × needles prompts, lengths linspace(max_len/4, max_len) past the context."""
    pairs = min(settings.kv_pairs, vocab // 2 - 1)
    if pairs < 1:
        raise ValueError(f"kv_retrieval needs a vocabulary of at least 4 tokens; this model has {vocab}")
    context = (3 if settings.kv_separator else 2) * pairs
    shortest = max(context + 2, max_len // 4)
    if max_len < shortest:
        raise ValueError(f"kv_retrieval: max length {max_len} is below the shortest prompt ({shortest})")
    lengths = sorted({int(x) for x in np.linspace(shortest, max_len, settings.niah_lengths).round()})
    depths = [float(x) for x in np.linspace(0, 100, settings.niah_depths)]
    samples = []
    for length in lengths:
        for depth in depths:
            for n in range(settings.niah_needles):
                cell_seed = zlib.crc32(f"kv/{seed}/{length}/{depth}/{n}".encode())
                samples.append(kv_sample(vocab, length, depth, pairs, settings.kv_separator, cell_seed))
    return samples


@register_probe
class KVRetrievalProbe(RetrievalProbe):
    name = "kv_retrieval"
    summary = "copies the queried value by argmax attention on key-value recall prompts (MQAR format)"
    task = "exact-match accuracy on key-value recall prompts, heads masked during decoding"

    def max_len(self, target: ProbeTarget, settings: ProbeSettings) -> int:
        return super().max_len(target, settings) + settings.value_len - 1  # the answer is one token

    def samples(self, target: ProbeTarget, settings: ProbeSettings, seed: int) -> list[NeedleSample]:
        return kv_grid(target.vocab_size, self.max_len(target, settings), settings, seed)

    def details(self, samples: list[NeedleSample], settings: ProbeSettings) -> dict:
        return {"kv_pairs": settings.kv_pairs, "separator": settings.kv_separator}
