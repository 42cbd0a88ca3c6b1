"""Token-level tasks for the suite: MQAR and k-hop MQAR (evals/mqar.py), one forward pass per batch,
scored per chain: a chain counts when every one of its `hops` answer tokens is the greedy prediction
under teacher forcing, which is exactly when greedy decoding from its query key writes the whole
chain out. For hops = 1 this is Zoology's accuracy (exact match of each answer token).

Zoology keeps the ratio sequence length / kv pairs at 16 (figure 2: (64, 4), (128, 8), (256, 16));
the default here does the same, capped by what the vocabulary can hold for the given hops.
"""

from __future__ import annotations

import zlib

import torch

from .mqar import example_tokens, mqar
from .scoring import answer_token_hits


def default_kv_pairs(length: int, vocab_size: int, hops: int, separator: bool = False) -> int:
    # mqar needs kv*hops distinct keys in [1, V/2), kv values in [V/2, V), and the tokens of kv chains
    capacity = min(
        (vocab_size // 2 - 1) // hops,
        vocab_size - vocab_size // 2,
        length // example_tokens(1, hops, separator),
    )
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
    (power_a, random_non_queries, separator) go to the generator: match them to the training data."""
    kv = kv_pairs or default_kv_pairs(length, vocab_size, hops, mqar_options.get("separator", False))
    cell_seed = zlib.crc32(f"{seed}/mqar/{length}/{hops}".encode())
    ids, labels = mqar(samples, length, kv, vocab_size, cell_seed, hops=hops, **mqar_options)
    return ids, labels, {"kv_pairs": kv, **mqar_options}


@torch.no_grad()
def chain_accuracy(
    model,
    ids: torch.Tensor,
    labels: torch.Tensor,
    hops: int,
    batch_size: int,
    predictions: list | None = None,
) -> dict:
    """-> {chain: fraction of chains with all `hops` links right, token: fraction of answer tokens
    right, sample: fraction of samples with every chain right}. With `predictions`, one row per
    sample is appended: its answer tokens, the model's greedy guesses for them, chains right."""
    device = next(model.parameters()).device
    tokens, chains, samples = [], [], []
    for start in range(0, len(ids), batch_size):
        batch, target = (
            ids[start : start + batch_size].to(device),
            labels[start : start + batch_size].to(device),
        )
        logits = model(input_ids=batch, use_cache=False).logits  # [B, T, V]
        hits = answer_token_hits(logits, target).cpu()  # [A], row-major: a chain's links are adjacent
        per_row = (target[:, 1:] != -100).sum(-1).tolist()  # answers per row (chains x hops)
        tokens.append(hits)
        guesses = logits[:, :-1].argmax(-1).cpu()  # [B, T-1]: the guess for position t+1
        answers = target[:, 1:].cpu()
        for r, row in enumerate(hits.split(per_row)):
            whole = row.view(-1, hops).all(-1)  # [chains]
            chains.append(whole)
            samples.append(bool(whole.all()))
            if predictions is not None:
                mask = answers[r] != -100
                predictions.append(
                    {
                        "index": start + r,
                        "answers": answers[r][mask].tolist(),
                        "prediction": guesses[r][mask].tolist(),
                        "chains_right": int(whole.sum()),
                        "chains": len(whole),
                    }
                )
    return {
        "chain": torch.cat(chains).float().mean().item(),
        "token": torch.cat(tokens).float().mean().item(),
        "sample": sum(samples) / len(samples),
    }
