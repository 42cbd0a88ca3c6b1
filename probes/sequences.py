"""Repeated random token sequences, the data of the pattern probes (TransformerLens demo: batch 10,
50 random tokens repeated twice; Olsson et al. prefix matching: 25 tokens repeated 4 times).

Within one repeat the tokens are distinct when the pool allows it, so every earlier occurrence of a
token is a copy from an earlier repeat and the patterns are unambiguous; TransformerLens draws from
a 50k vocabulary where collisions are rare anyway.
"""

from __future__ import annotations

import torch


def repeated_random_tokens(
    pool: torch.Tensor, batch: int, length: int, repeats: int, seed: int, bos: int | None = None
) -> torch.Tensor:
    """pool [P] token ids -> [batch, (bos) + length * repeats] int64, deterministic in `seed`."""
    if length < 1 or repeats < 1 or batch < 1:
        raise ValueError(f"batch, length and repeats must be >= 1, got {batch}, {length}, {repeats}")
    g = torch.Generator().manual_seed(seed)
    if len(pool) >= length:
        picks = torch.stack([torch.randperm(len(pool), generator=g)[:length] for _ in range(batch)])
    else:
        picks = torch.randint(0, len(pool), (batch, length), generator=g)
    seq = pool[picks].repeat(1, repeats)  # [B, length * repeats]
    if bos is not None:
        seq = torch.cat([torch.full((batch, 1), bos, dtype=seq.dtype), seq], dim=1)
    return seq


def copy_accuracy(logits: torch.Tensor, tokens: torch.Tensor, first_copy: int) -> float:
    """Next-token accuracy on the predictable part of repeated sequences: positions >= first_copy
    (the start of the second repeat). logits [B, T, V], tokens [B, T]."""
    pred = logits[:, first_copy - 1 : -1].argmax(-1)  # predicts tokens[:, first_copy:]
    return (pred == tokens[:, first_copy:].to(pred.device)).float().mean().item()
