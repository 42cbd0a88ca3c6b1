"""MQAR: multi-query associative recall (Zoology, HazyResearch/zoology `data/multiquery_ar.py`;
Arora et al. 2023), and its k-hop form (chains A -> B -> C ...).

One example of length T with C = num_kv_pairs chains of `hops` pairs each:

    [k v k v ... k v]  [x0 x1 .. xh  noise  x0 x1 .. xh  noise noise ...]
     context            one query slot per chain, at power-law distributed slots

- keys (and the inner links of a chain) come from [1, V/2), final values from [V/2, V), all distinct
  within an example, so every answer is determined by the context;
- with hops = h a chain is x0 -> x1 -> ... -> x_h, stored as h pairs (x_j, x_{j+1}) shuffled among all
  other pairs; its query slot is the whole chain x0 x1 .. x_h and every link x1 .. x_h is an answer,
  each predicted from the one before (RULER's variable tracking likewise answers with the whole
  chain). So a chain is right under teacher forcing exactly when greedy decoding from x0 writes it
  out, and hops = 1 is Zoology's MQAR exactly (slot `k v`, one answer);
- `separator=True` writes each context pair as `0 k v`. Without it an inner link occurs twice in the
  context (as the value of one pair and the key of the next) and only the parity of its position
  says which occurrence is the key, which a model with relative positions (RoPE) cannot read; with
  the separator the key occurrence is the one after a 0;
- the query region is cut into (T - context) // (h + 1) slots; each chain is queried once, in a
  slot drawn without replacement with p(slot i) ∝ i^(power_a - 1), i = 1.. (power_a = 0.01 puts
  most queries soon after the context, a few far away);
- every other position is a uniform random token from [0, V) (Zoology's default
  `random_non_queries=True`), or 0 with `random_non_queries=False` (Zoology's figure-2 setting).

Labels are aligned with input_ids: labels[t] = input_ids[t] at answer positions, -100 elsewhere
(the model shifts internally, so an answer is predicted from the token before it).
"""

from __future__ import annotations

import numpy as np
import torch

from ..common import check_bool, check_fraction, check_positive_int

IGNORE_INDEX = -100
# The generator settings of a training run that change what a sample looks like, so an eval of the
# trained model must reuse them; kv pairs, lengths and hops are the eval's own grid.
MQAR_TRAINING_OPTIONS = ("power_a", "random_non_queries", "separator")


def mqar(
    num_examples: int,
    seq_len: int,
    num_kv_pairs: int,
    vocab_size: int,
    seed: int,
    power_a: float = 0.01,
    hops: int = 1,
    random_non_queries: bool = True,
    separator: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """-> (input_ids [N, T] int64, labels [N, T] int64), deterministic in `seed`."""
    check_mqar_args(num_examples, seq_len, num_kv_pairs, vocab_size, power_a, hops, separator)
    rng = np.random.default_rng(seed)
    chains, context = num_kv_pairs, context_tokens(num_kv_pairs, hops, separator)
    width = hops + 1  # a query slot: the chain x0 x1 .. x_h
    slots = (seq_len - context) // width
    slot_p = power_a * np.arange(1, slots + 1) ** (power_a - 1)
    slot_p /= slot_p.sum()
    half = vocab_size // 2

    # Noise first (or Zoology's zeros: token 0 is never a key), then the context and the query slots.
    ids = rng.integers(0, vocab_size, size=(num_examples, seq_len))  # [N, T]
    if not random_non_queries:
        ids[:] = 0
    labels = np.full((num_examples, seq_len), IGNORE_INDEX, dtype=np.int64)
    for n in range(num_examples):
        links = 1 + rng.choice(half - 1, size=(chains, hops), replace=False)
        values = half + rng.choice(vocab_size - half, size=(chains, 1), replace=False)
        path = np.concatenate([links, values], axis=1)  # [C, hops + 1]: x0 .. x_hops per chain
        pairs = np.stack([path[:, :-1], path[:, 1:]], axis=-1).reshape(-1, 2)  # [C*hops, 2]
        entries = pairs[rng.permutation(len(pairs))]  # [C*hops, 2]
        if separator:
            entries = np.concatenate([np.zeros_like(entries[:, :1]), entries], axis=1)  # [C*hops, 3]
        ids[n, :context] = entries.reshape(-1)
        query_pos = context + width * rng.choice(slots, size=chains, replace=False, p=slot_p)  # [C]
        for j in range(width):
            ids[n, query_pos + j] = path[:, j]
        for j in range(1, width):
            labels[n, query_pos + j] = path[:, j]
    return torch.from_numpy(ids.astype(np.int64)), torch.from_numpy(labels)


def training_options(data: dict) -> dict:
    """A training run's `data:` section (train/data_sections.py, as a dict) -> the MQAR_TRAINING_OPTIONS its
    samples were made with, or {} when it did not train on MQAR."""
    task = data.get("task") or {}
    if data.get("source") != "task" or task.get("name") != "mqar":
        return {}
    return {k: task[k] for k in MQAR_TRAINING_OPTIONS if k in task}


def context_tokens(num_kv_pairs: int, hops: int, separator: bool = False) -> int:
    return (3 if separator else 2) * num_kv_pairs * hops


def example_tokens(num_kv_pairs: int, hops: int, separator: bool = False) -> int:
    """Tokens an example needs: the context plus one query slot (the chain, hops + 1 tokens) per chain."""
    return context_tokens(num_kv_pairs, hops, separator) + num_kv_pairs * (hops + 1)


def check_mqar_args(num_examples, seq_len, num_kv_pairs, vocab_size, power_a, hops, separator=False) -> None:
    for name, value in (
        ("num_examples", num_examples),
        ("seq_len", seq_len),
        ("num_kv_pairs", num_kv_pairs),
        ("vocab_size", vocab_size),
        ("hops", hops),
    ):
        check_positive_int(value, f"mqar.{name}")
    check_fraction(power_a, "mqar.power_a", "(0, 1]")
    links, half = num_kv_pairs * hops, vocab_size // 2
    if links > half - 1 or num_kv_pairs > vocab_size - half:
        raise ValueError(
            f"mqar.vocab_size = {vocab_size} is too small for num_kv_pairs = {num_kv_pairs} x hops = {hops}: "
            f"needs {links} distinct keys in [1, V/2) and {num_kv_pairs} values in [V/2, V); "
            f"use vocab_size >= {2 * max(links + 1, num_kv_pairs)}"
        )
    check_bool(separator, "mqar.separator")
    needed = example_tokens(num_kv_pairs, hops, separator)
    if seq_len < needed:
        raise ValueError(
            f"mqar.seq_len = {seq_len} is too short for num_kv_pairs = {num_kv_pairs}, hops = {hops}: "
            f"the context takes {context_tokens(num_kv_pairs, hops, separator)} tokens and the queries "
            f"{num_kv_pairs * (hops + 1)}; use seq_len >= {needed}"
        )
