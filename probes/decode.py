"""Greedy decoding for probes, as Wu et al.'s detection and masking scripts run it: prefill all but
the last prompt token with a cache, then feed one token per step (the last prompt token first), so
every generated token comes from a single-query step whose attention row is the one scored.

Masks (`heads`, `mode`) apply to the decode steps only (Wu et al. pass the blocked heads to the
decoding calls, not to the prefill); the prompt's cache is computed unmasked.
"""

from __future__ import annotations

from contextlib import nullcontext
from dataclasses import dataclass

import torch

from .target import ProbeTarget


@dataclass
class Decoded:
    tokens: list[int]  # generated ids
    rows: list[list[torch.Tensor]] | None  # per step, per layer: [H_l, S] attention of the step's query


@torch.no_grad()
def greedy_decode(
    target: ProbeTarget,
    prompt: torch.Tensor,
    steps: int,
    maps: bool = False,
    heads=(),
    mode: str = "uniform",
) -> Decoded:
    """prompt [T] int64 -> `steps` greedy tokens (and, with maps, each step's last-query rows)."""
    assert prompt.ndim == 1 and len(prompt) >= 2, "need a prompt of at least two tokens"
    cache = target.run(prompt[None, :-1]).cache
    token = prompt[-1:]
    tokens, rows = [], [] if maps else None
    masking = target.flags(heads, mode) if heads else nullcontext()
    with masking:
        for _ in range(steps):
            out = target.run(token[None], cache=cache, maps=maps)
            cache = out.cache
            token = out.logits[0, -1].argmax(-1, keepdim=True).cpu()
            tokens.append(int(token))
            if maps:
                rows.append([m[0, :, -1].cpu() for m in out.maps])  # [H_l, S]
    return Decoded(tokens, rows)
