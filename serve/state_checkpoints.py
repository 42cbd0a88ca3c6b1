"""Recurrent-state checkpoints for prefix caching, stored in cache pages.

A checkpoint is the state of every recurrent layer (and recurrent part of an `intra` layer) of one
sequence after a block boundary, exactly as a state slot holds it: each layer's values in the
storage dtype, then its int8 scales if any, back to back as bytes. It is written into pages of an
arena: the paged K/V / latent pool when the model has paged layers, so that checkpoints and KV
blocks are paid from the same pages and the prefix cache's eviction weighs one against the other
(docs/prefix_caching.md); otherwise a pool of checkpoint-sized pages of its own. A page's bytes are
the page's rows of every tensor of the arena, in order; a checkpoint spans
ceil(checkpoint bytes / page bytes) pages, in any order (they are only copied, never attended).
"""

from __future__ import annotations

import bisect
import itertools
import math
from typing import TYPE_CHECKING

import torch

from ..kernels import state_store

if TYPE_CHECKING:
    from .cache_manager import StateSlots


class PageArena:
    """Byte access to pages of a set of tensors that share their first (page) dimension."""

    def __init__(self, tensors: list[torch.Tensor]):
        # [P, ...] contiguous -> [P, bytes] uint8 views of the same memory
        self.views = [t.view(t.shape[0], -1).view(torch.uint8) for t in tensors]
        widths = [v.shape[1] for v in self.views]
        self.starts = [0, *itertools.accumulate(widths)][:-1]
        self.widths = widths
        self.page_bytes = sum(widths)

    def _pieces(self, pages: list[int], offset: int, length: int):
        """(view, page, start in the view's row, start in the data, length) covering the bytes."""
        pos, end = offset, offset + length
        while pos < end:
            page_index, within = divmod(pos, self.page_bytes)
            j = bisect.bisect_right(self.starts, within) - 1
            at = within - self.starts[j]
            n = min(self.widths[j] - at, end - pos)
            yield self.views[j], pages[page_index], at, pos - offset, n
            pos += n

    def write(self, pages: list[int], offset: int, data: torch.Tensor) -> None:
        for view, page, at, start, n in self._pieces(pages, offset, data.numel()):
            view[page, at : at + n] = data[start : start + n]

    def read(self, pages: list[int], offset: int, length: int) -> torch.Tensor:
        parts = [view[page, at : at + n] for view, page, at, _, n in self._pieces(pages, offset, length)]
        return torch.cat(parts)


def _as_bytes(t: torch.Tensor) -> torch.Tensor:
    return t.contiguous().reshape(-1).view(torch.uint8)


class CheckpointStore:
    """Saves and restores whole-model recurrent checkpoints in arena pages."""

    def __init__(self, arena: PageArena, layers: list[StateSlots]):
        self.arena, self.layers = arena, layers
        self.offsets: list[int] = []  # where each layer's bytes start in a checkpoint
        at = 0
        for slots in layers:
            self.offsets.append(at)
            at += _slot_bytes(slots)
        self.checkpoint_bytes = at
        self.pages_per_checkpoint = max(1, math.ceil(at / arena.page_bytes)) if layers else 0
        self.saves = 0

    def save_state(self, layer: int, pages: list[int], state: torch.Tensor) -> None:
        """Store fp32 state [H, K, V] of recurrent layer `layer` into a checkpoint's pages, rounded
        to the storage dtype as the layer's slot would be."""
        slots = self.layers[layer]
        if slots.dtype == "fp32":
            values, scales = state.to(slots.values.dtype), None
        else:
            self.saves += 1
            seed = (slots.seed * 0x9E3779B1 + self.saves) & 0xFFFFFFFF
            values, scales = state_store(state[None].float(), slots.dtype, slots.rounding, slots.group, seed)
            values, scales = values[0], None if scales is None else scales[0]
        data = _as_bytes(values) if scales is None else torch.cat([_as_bytes(values), _as_bytes(scales)])
        self.arena.write(pages, self.offsets[layer], data)

    def restore(self, pages: list[int], slot: int) -> None:
        """Copy a checkpoint into state slot `slot` of every recurrent layer."""
        for layer, slots in enumerate(self.layers):
            data = self.arena.read(pages, self.offsets[layer], _slot_bytes(slots))
            n = slots.values[slot].numel() * slots.values.element_size()
            slots.values[slot].copy_(data[:n].view(slots.values.dtype).view(slots.values.shape[1:]))
            if slots.scales is not None:
                slots.scales[slot].copy_(data[n:].view(torch.float32).view(slots.scales.shape[1:]))


def _slot_bytes(slots: StateSlots) -> int:
    n = slots.values[0].numel() * slots.values.element_size()
    if slots.scales is not None:
        n += slots.scales[0].numel() * slots.scales.element_size()
    return n
