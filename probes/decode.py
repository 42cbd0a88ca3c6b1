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

from ..archs import greedy_decode as archs_greedy_decode
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
    """prompt [T] int64 -> `steps` greedy tokens (and, with maps, each step's last-query rows).
    The loop is the project's one (`archs.greedy_decode`, its step path); this adds the probe's
    forward: maps read and heads masked on the single-query steps, never on the prefill."""
    assert prompt.ndim == 1 and len(prompt) >= 2, "need a prompt of at least two tokens"
    rows = [] if maps else None

    def step(ids, cache):
        if cache is None:  # the prefill: unmasked, no maps
            out = target.run(ids)
            return out.logits, out.cache
        with target.flags(heads, mode) if heads else nullcontext():
            out = target.run(ids, cache=cache, maps=maps)
        if maps:
            rows.append([m[0, :, -1].cpu() for m in out.maps])  # [H_l, S]
        return out.logits, out.cache

    tokens = archs_greedy_decode(target.model, prompt[None], steps, step=step).tokens[0]
    return Decoded(tokens.tolist(), rows)
