"""Token-level needle-in-a-haystack prompts for retrieval scoring (Wu et al. 2024, at token level).

    prompt = (bos) + haystack[:d] + key + value + haystack[d:] + key   -> the model must continue with value

Haystack tokens are random draws from the pool without the needle's tokens, so the key occurs
exactly twice and every value token once: copying is the only way to answer. Key and value tokens
are distinct. The value span is the "needle" of the retrieval score: the positions a retrieval head
must attend to while it generates them. This suits tiny byte / random-vocabulary models, which
cannot read RULER's English needles (evals/niah.py). Depth 0 puts the needle first, 100 right
before the final key. A model with a BOS token gets it first, as a tokenizer would put it.

The grid follows Wu et al. (lengths × depths × needles), scaled to the model's context:
`lengths` points from max_len/4 to max_len, where max_len leaves room for the generated value.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass

import numpy as np
import torch


@dataclass
class NeedleSample:
    prompt: torch.Tensor  # [T] int64
    answer: torch.Tensor  # [A] int64, the value
    span: tuple[int, int]  # [start, end) of the value inside the prompt
    length: int
    depth: float


def needle_sample(
    pool: torch.Tensor,
    length: int,
    depth: float,
    key_len: int,
    value_len: int,
    seed: int,
    bos: int | None = None,
) -> NeedleSample:
    """One prompt of exactly `length` tokens with the needle at `depth` percent of the haystack."""
    prefix = [] if bos is None else [bos]
    needle_len = len(prefix) + 2 * key_len + value_len  # key + value, and the key again as the query
    if length <= needle_len:
        raise ValueError(
            f"NIAH length {length} leaves no haystack for key {key_len} + value {value_len} tokens"
        )
    if len(pool) < key_len + value_len + 1:
        raise ValueError(
            f"the token pool ({len(pool)} ids) is too small for a needle of {key_len + value_len}"
        )
    g = torch.Generator().manual_seed(seed)
    needle = pool[torch.randperm(len(pool), generator=g)[: key_len + value_len]]
    key, value = needle[:key_len], needle[key_len:]
    rest = pool[~torch.isin(pool, needle)]
    hay_len = length - needle_len
    hay = rest[torch.randint(0, len(rest), (hay_len,), generator=g)]
    d = round(hay_len * depth / 100)
    prompt = torch.cat([torch.tensor(prefix, dtype=pool.dtype), hay[:d], key, value, hay[d:], key])
    start = len(prefix) + d + key_len
    return NeedleSample(prompt, value, (start, start + value_len), length, depth)


def needle_grid(
    pool: torch.Tensor,
    max_len: int,
    lengths: int,
    depths: int,
    needles: int,
    key_len: int,
    value_len: int,
    seed: int,
    bos: int | None = None,
) -> list[NeedleSample]:
    """lengths × depths × needles samples; prompt lengths linspace(max_len/4, max_len)."""
    shortest = max(2 * key_len + value_len + 2, max_len // 4)
    if max_len < shortest:
        raise ValueError(f"max NIAH length {max_len} is below the shortest prompt ({shortest} tokens)")
    grid_lengths = sorted({int(x) for x in np.linspace(shortest, max_len, lengths).round()})
    grid_depths = [float(x) for x in np.linspace(0, 100, depths)]
    samples = []
    for length in grid_lengths:
        for depth in grid_depths:
            for n in range(needles):
                cell_seed = zlib.crc32(f"{seed}/{length}/{depth}/{n}".encode())
                samples.append(needle_sample(pool, length, depth, key_len, value_len, cell_seed, bos))
    return samples


def rouge1_recall(generated: list[int], answer: list[int]) -> float:
    """ROUGE-1 recall on token ids: clipped unigram overlap / answer length (Wu et al.'s gate)."""
    remaining: dict[int, int] = {}
    for tok in generated:
        remaining[tok] = remaining.get(tok, 0) + 1
    hits = 0
    for tok in answer:
        if remaining.get(tok, 0) > 0:
            remaining[tok] -= 1
            hits += 1
    return hits / len(answer)
