"""Token-level tasks for the suite: MQAR and k-hop MQAR (evals/mqar.py), scored by exact match of
each answer token under teacher forcing (Zoology's accuracy), one forward pass per batch.

Zoology keeps the ratio sequence length / kv pairs at 16 (figure 2: (64, 4), (128, 8), (256, 16));
the default here does the same, capped by what the vocabulary can hold for the given hops.
"""

from __future__ import annotations

import zlib

import torch

from .mqar import mqar
from .scoring import answer_token_hits


def default_kv_pairs(length: int, vocab_size: int, hops: int) -> int:
    # mqar needs kv*hops distinct keys in [1, V/2), kv values in [V/2, V), and 2*kv*(hops+1) tokens
    capacity = min((vocab_size // 2 - 1) // hops, vocab_size - vocab_size // 2, length // (2 * (hops + 1)))
    return max(1, min(length // 16, capacity))


def mqar_cell(
    vocab_size: int,
    length: int,
    hops: int,
    samples: int,
    seed: int,
    kv_pairs: int | None = None,
    **mqar_options,
) -> tuple[torch.Tensor, torch.Tensor, dict]:
    """-> input_ids [N, T], labels [N, T], metadata for cell (length, hops). `mqar_options`
    (power_a, random_non_queries) go to the generator: match them to the training data."""
    kv = kv_pairs or default_kv_pairs(length, vocab_size, hops)
    cell_seed = zlib.crc32(f"{seed}/mqar/{length}/{hops}".encode())
    ids, labels = mqar(samples, length, kv, vocab_size, cell_seed, hops=hops, **mqar_options)
    return ids, labels, {"kv_pairs": kv, **mqar_options}


@torch.no_grad()
def token_accuracy(model, ids: torch.Tensor, labels: torch.Tensor, batch_size: int) -> tuple[float, float]:
    """-> (fraction of answer tokens right, fraction of samples with every answer right)."""
    device = next(model.parameters()).device
    hits, exact = [], []
    for start in range(0, len(ids), batch_size):
        batch, target = (
            ids[start : start + batch_size].to(device),
            labels[start : start + batch_size].to(device),
        )
        logits = model(input_ids=batch, use_cache=False).logits  # [B, T, V]
        row_hits = answer_token_hits(logits, target)  # [A]
        per_row = (target[:, 1:] != -100).sum(-1).tolist()  # answers per row
        hits.append(row_hits)
        exact += [bool(chunk.all()) for chunk in row_hits.split(per_row)]
    all_hits = torch.cat(hits)
    return all_hits.float().mean().item(), sum(exact) / len(exact)
