"""Layered prefill (Layered Prefill, arXiv 2510.08055; docs/layered_prefill.md).

Chunked prefill splits a prompt along its tokens: every chunk runs every layer, so an MoE layer
loads its experts' weights once per chunk. Layered prefill splits the model instead: the layers
form G contiguous groups, and a *cohort* of newly admitted prompts advances through one group per
engine step, whole, alongside the running decodes (which run every layer every step). Each
layer's experts are then loaded once per cohort. Between steps the cohort's hidden states are
held here; its cache entries for a group's layers are written when that group runs.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch

from .request import Request


def split_layers(num_layers: int, groups: int) -> list[range]:
    """Layers 0..L-1 as `groups` contiguous ranges whose sizes differ by at most one."""
    if not 1 <= groups <= num_layers:
        raise ValueError(f"layer groups = {groups}: must be in 1..{num_layers} (the model's layers)")
    bounds = [round(g * num_layers / groups) for g in range(groups + 1)]
    return [range(a, b) for a, b in zip(bounds, bounds[1:], strict=False)]


def groups_for(prompt_tokens: int, token_budget: int, num_layers: int, fixed: int | None) -> int:
    """G for a cohort: `fixed`, or the fewest groups whose largest one keeps a step's prefill work
    (prompt tokens x layers in the group) within the chunked schedule's (token budget x all layers):
    groups of at most s = budget x L // tokens layers (at least 1, at most L)."""
    if fixed is not None:
        return fixed
    per_group = max(1, min(num_layers, token_budget * num_layers // max(1, prompt_tokens)))
    return math.ceil(num_layers / per_group)


@dataclass
class Cohort:
    """Requests in layered prefill together. `entries`: (request, tokens to prefill from its
    `num_computed`), in the order of their rows."""

    entries: list[tuple[Request, int]]
    groups: list[range]
    next_group: int = 0  # the group the next step runs
    hidden: torch.Tensor | None = None  # [1, sum n, D] after the groups run so far (None: embed)
    captures: list = field(default_factory=list)  # prefix caching: (request, at, pages) to store
    planned: bool = False  # captures chosen (at the first step)

    @property
    def done(self) -> bool:
        return self.next_group == len(self.groups)

    def holds(self, req: Request) -> bool:
        return any(r is req for r, _ in self.entries)

    def layers(self, count: int) -> range:
        """The layers of the next `count` groups."""
        last = min(self.next_group + count, len(self.groups)) - 1
        return range(self.groups[self.next_group].start, self.groups[last].stop)

    def drop(self, req: Request) -> list[list[int]]:
        """Take `req` out (aborted or preempted): its rows of the hidden states go; -> the pages of
        the checkpoints it had planned, for the caller to free."""
        at, keep = 0, []
        for r, n in self.entries:
            if r is not req:
                keep.append((at, n))
            at += n
        if self.hidden is not None:
            index = torch.cat(
                [torch.arange(a, a + n) for a, n in keep] or [torch.empty(0, dtype=torch.int64)]
            )
            self.hidden = self.hidden.index_select(1, index.to(self.hidden.device))
        self.entries = [(r, n) for r, n in self.entries if r is not req]
        pages = [p for r, _, p in self.captures if r is req]
        self.captures = [c for c in self.captures if c[0] is not req]
        return pages

    def hidden_bytes(self) -> int:
        h = self.hidden
        return 0 if h is None else h.numel() * h.element_size()
