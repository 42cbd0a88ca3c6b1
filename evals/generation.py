"""Batched greedy generation through `model.generate()` (the serving engine takes over once it
exists). attnlab models reject left padding, so batches are made of prompts with equal token
counts — which every cell of the suite is, by construction — and never padded."""

from __future__ import annotations

from collections import defaultdict

import torch
from transformers import PreTrainedTokenizerBase


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
    for length, group in by_length.items():
        for start in range(0, len(group), batch_size):
            chunk = group[start : start + batch_size]
            ids = torch.tensor([ids for _, ids in chunk], device=device)  # [B, T], no padding
            out = model.generate(
                input_ids=ids,
                attention_mask=torch.ones_like(ids),
                max_new_tokens=max_new_tokens,
                do_sample=False,
                pad_token_id=pad if pad is not None else 0,
            )  # [B, T + new]
            for (i, _), row in zip(chunk, out[:, length:].tolist(), strict=True):
                outputs[i] = cut_at_stop(tokenizer.decode(row, skip_special_tokens=True), stop)
            if on_batch is not None:
                on_batch(len(chunk))
    return outputs


def cut_at_stop(text: str, stop: tuple[str, ...]) -> str:
    ends = [text.find(s) for s in stop if s and s in text]
    return text[: min(ends)] if ends else text
