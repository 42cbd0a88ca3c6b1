"""Batched greedy generation of text: prompts encoded, grouped by token count, decoded by the
project's one greedy loop (`archs.greedy_decode`, cached `generate()`), cut at stop strings.
attnlab models reject left padding, so batches are made of prompts with equal token counts — which
every cell of the suite is, by construction — and never padded."""

from __future__ import annotations

from collections import defaultdict

import torch
from transformers import PreTrainedTokenizerBase

from ..archs import greedy_decode


def encode(tokenizer: PreTrainedTokenizerBase, text: str) -> list[int]:
    return tokenizer(text, add_special_tokens=False)["input_ids"]


@torch.no_grad()
def greedy_generate(
    model,
    tokenizer: PreTrainedTokenizerBase,
    prompts: list[str],
    max_new_tokens: int,
    batch_size: int = 8,
    stop: tuple[str, ...] = (),
    on_batch=None,
) -> list[str]:
    """Greedy continuations of `prompts` (decoded, cut at the first of `stop`), in input order.
    `on_batch(n)` is called after each batch of n prompts (progress bars)."""
    device = next(model.parameters()).device
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    by_length: dict[int, list[tuple[int, list[int]]]] = defaultdict(list)
    for i, prompt in enumerate(prompts):
        ids = encode(tokenizer, prompt)
        by_length[len(ids)].append((i, ids))
    outputs: list[str] = [""] * len(prompts)
    for group in by_length.values():
        for start in range(0, len(group), batch_size):
            chunk = group[start : start + batch_size]
            ids = torch.tensor([ids for _, ids in chunk], device=device)  # [B, T], no padding
            new = greedy_decode(model, ids, max_new_tokens, stop_at_eos=True, pad_token_id=pad).tokens
            for (i, _), row in zip(chunk, new.tolist(), strict=True):
                outputs[i] = cut_at_stop(tokenizer.decode(row, skip_special_tokens=True), stop)
            if on_batch is not None:
                on_batch(len(chunk))
    return outputs


def cut_at_stop(text: str, stop: tuple[str, ...]) -> str:
    ends = [text.find(s) for s in stop if s and s in text]
    return text[: min(ends)] if ends else text
