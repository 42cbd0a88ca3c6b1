"""The engine's cache states: the same protocol as the dense states in archs/state.py
(docs/cache_protocol.md), over pages and slots, for a packed batch of sequences.

A step's tokens come as one row [1, T]: first the sequences that add exactly one token (decodes,
one query each), then the prefill chunks. Each state writes the new tokens' entries into its
pages (or updates its slots) and runs the paged / varlen ops on them; nothing is gathered into a
per-sequence tensor here (the ops' backends decide how to read pages).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from ..archs import CompositeSpec, KVSpec, LatentSpec, RecurrentSpec
from ..kernels import (
    lightning_decode,
    lightning_prefill,
    paged_attn_decode,
    paged_attn_prefill,
    state_load,
    state_store,
)
from .cache_manager import StateSlots, spec_group


@dataclass
class StepBatch:
    """Where this step's tokens go. N sequences, T tokens; the first `num_decode` add one token."""

    num_decode: int
    seq_lens: torch.Tensor  # [N] int32: keys held per sequence once this step's tokens are in
    cu_prefill: torch.Tensor  # [N - num_decode + 1] int32: query offsets of the prefill chunks
    tables: dict[str, torch.Tensor]  # group -> [N, max_blocks] int32 (-1: not held)
    write_at: dict[str, tuple[torch.Tensor, torch.Tensor]]  # group -> page [T], offset in page [T]
    slot_ids: torch.Tensor | None  # [N] int64: recurrent slot of each sequence
    num_tokens: int
    max_prefill_len: int = 0  # the longest prefill chunk of the step
    # Prefix caching: store the recurrent state after token `row` of the step into checkpoint
    # pages (state_checkpoints.py), for each (row, pages).
    captures: list[tuple[int, list[int]]] = field(default_factory=list)
    # Speculative decoding: keep the recurrent state after each of these rows (for a rollback).
    keep: list[int] = field(default_factory=list)


class StepHolder:
    """The batch the runner set for the current forward; every engine state reads it."""

    batch: StepBatch | None = None


class EngineState:
    def __init__(self, holder: StepHolder):
        self.holder = holder

    def positions(self, batch, t, device):
        raise RuntimeError("the engine passes per-token positions to the model; a state cannot infer them")

    def advance(self, n: int) -> None:
        pass  # the scheduler tracks each sequence's length


def _paged_attention(step: StepBatch, group: str, q, k_cache, v_cache, scale, window, sinks):
    """q [T, H, D] over pages -> o [T, H, Dv]: decodes through paged_attn_decode, chunks through
    the varlen paged prefill."""
    nd, table, lens = step.num_decode, step.tables[group], step.seq_lens
    if nd == step.num_tokens:
        return paged_attn_decode(q, k_cache, v_cache, table, lens, scale, sinks, window)
    pre = paged_attn_prefill(
        q[nd:], k_cache, v_cache, table[nd:], step.cu_prefill, lens[nd:], scale, sinks, window
    )
    if nd == 0:
        return pre
    dec = paged_attn_decode(q[:nd], k_cache, v_cache, table[:nd], lens[:nd], scale, sinks, window)
    return torch.cat([dec, pre])


class PagedKV(EngineState):
    """Full or sliding-window softmax attention over head-major K/V pages [P, Hkv, block, D]."""

    def __init__(self, holder, group: str, k_pages: torch.Tensor, v_pages: torch.Tensor):
        super().__init__(holder)
        self.group, self.k_pages, self.v_pages = group, k_pages, v_pages
        self.k_view, self.v_view = k_pages.transpose(1, 2), v_pages.transpose(1, 2)  # [P, block, Hkv, D]
        self.kind = "kv" if group == "paged" else "window"

    def attend(self, q, k, v, *, scale, window, sinks):
        step = self.holder.batch
        pages, offsets = step.write_at[self.group]  # [T], [T]
        self.k_pages[pages, :, offsets] = k[0].to(self.k_pages.dtype)  # [T, Hkv, D]
        self.v_pages[pages, :, offsets] = v[0].to(self.v_pages.dtype)
        o = _paged_attention(step, self.group, q[0], self.k_view, self.v_view, scale, window, sinks)
        return o[None]  # [1, T, H, Dv]


class PagedLatent(EngineState):
    """MLA over latent pages [P, block, R + Dr]: the absorbed form is attention with one shared key
    head [c_kv | k_pe] whose value is its first R channels, so it runs on the paged softmax ops."""

    kind = "latent"

    def __init__(self, holder, pages: torch.Tensor, latent_dim: int):
        super().__init__(holder)
        self.pages, self.latent_dim = pages, latent_dim

    def attend_latent(self, q_nope, q_pe, c_kv, k_pe, *, mla):
        step = self.holder.batch
        pages, offsets = step.write_at["paged"]  # [T], [T]
        self.pages[pages, offsets] = torch.cat([c_kv[0], k_pe[0]], dim=-1).to(self.pages.dtype)  # [T, R + Dr]
        q = torch.cat([mla.absorb(q_nope[0]), q_pe[0]], dim=-1)  # [T, H, R + Dr]
        keys = self.pages[:, :, None, :]  # [P, block, 1, R + Dr]
        values = self.pages[:, :, None, : self.latent_dim]  # [P, block, 1, R] (a view)
        o_lat = _paged_attention(step, "paged", q, keys, values, mla.scale, None, None)
        return mla.unabsorb(o_lat)[None]  # [1, T, H, Dv]


class SlotRecurrent(EngineState):
    """Lightning attention on per-sequence state slots (`StateSlots`): load to fp32, update in fp32,
    store in the storage dtype (state_load / state_store: rounding and int8 scales are theirs)."""

    kind = "recurrent"

    def __init__(self, holder, slots: StateSlots):
        super().__init__(holder)
        self.slots = slots
        self.storage_dtype = slots.values.dtype
        self.stores = 0  # stochastic rounding draws a fresh seed for every store
        self.checkpoints, self.checkpoint_layer = None, None  # prefix caching: set by the runner
        self.kept: dict[int, torch.Tensor] = {}  # speculative decoding: row -> state after it

    def load(self, ids: torch.Tensor) -> torch.Tensor:
        """fp32 states [n, H, K, V] of slots `ids`."""
        s = self.slots
        # index_select / index_copy_ move whole [H, K, V] slots (advanced indexing is ~10x slower).
        values = s.values.index_select(0, ids)
        if s.scales is None and values.dtype == torch.float32:
            return values
        scales = None if s.scales is None else s.scales.index_select(0, ids)
        return state_load(values, scales, s.group)

    def store(self, ids: torch.Tensor, state: torch.Tensor) -> None:
        s = self.slots
        if s.dtype == "fp32":
            s.values.index_copy_(0, ids, state.to(s.values.dtype))
            return
        self.stores += 1
        seed = (s.seed * 0x632BE5AB + self.stores) & 0xFFFFFFFF
        values, scales = state_store(state, s.dtype, s.rounding, s.group, seed)
        s.values.index_copy_(0, ids, values)
        if scales is not None:
            s.scales.index_copy_(0, ids, scales)

    def attend_linear(self, q, k, v, *, slope, chunk_size):
        step = self.holder.batch
        nd, ids = step.num_decode, step.slot_ids
        wanted = sorted({row for row, _ in step.captures} | set(step.keep))  # rows whose state is asked for
        at: dict[int, torch.Tensor] = {}  # row -> fp32 state after it [H, K, V]
        outs = []
        if nd:
            o, state = lightning_decode(q[0, :nd], k[0, :nd], v[0, :nd], slope, self.load(ids[:nd]))
            self.store(ids[:nd], state)
            at.update((row, state[row]) for row in wanted if row < nd)
            outs.append(o)
        if nd < step.num_tokens:
            initial = self.load(ids[nd:])
            # The chunk size is a speed hint: a pack of short chunks (speculative verification,
            # k + 1 tokens each) would be padded to the layer's block each (8 x 4 tokens: 48 ms at
            # 256 against 2.5 ms at 4 here); use the longest sequence's length when it is shorter.
            longest = step.max_prefill_len or chunk_size
            chunk = min(chunk_size, 1 << max(0, longest - 1).bit_length())
            args = (q[:, nd:], k[:, nd:], v[:, nd:], slope, initial, True, step.cu_prefill, chunk)
            rows = [row for row in wanted if row >= nd]
            if rows:
                index = torch.tensor([row - nd for row in rows], dtype=torch.int64, device=q.device)
                o, final, states = lightning_prefill(*args, state_checkpoints=index)
                at.update(zip(rows, states, strict=True))
            else:
                o, final = lightning_prefill(*args)
            self.store(ids[nd:], final)
            outs.append(o[0])
        for row, pages in step.captures:
            self.checkpoints.save_state(self.checkpoint_layer, pages, at[row])
        self.kept = {row: at[row] for row in step.keep}
        return (outs[0] if len(outs) == 1 else torch.cat(outs))[None]  # [1, T, H, V]

    def restore_kept(self, slot: int, row: int) -> None:
        """Speculative rollback: the slot takes the state kept after `row` of the last step."""
        self.store(torch.tensor([slot], device=self.slots.values.device), self.kept[row][None])


class Composite(EngineState):
    kind = "composite"

    def __init__(self, holder, parts: list):
        super().__init__(holder)
        self.parts = parts


def build_state(spec, storage, holder: StepHolder):
    """The engine state of one layer from its cache spec and the manager's storage for it."""
    if isinstance(spec, CompositeSpec):
        return Composite(
            holder, [build_state(p, s, holder) for p, s in zip(spec.parts, storage, strict=True)]
        )
    if isinstance(spec, RecurrentSpec):
        return SlotRecurrent(holder, storage)
    if isinstance(spec, LatentSpec):
        return PagedLatent(holder, storage, spec.latent_dim)
    assert isinstance(spec, KVSpec)
    return PagedKV(holder, spec_group(spec), *storage)


def flat_states(states: list) -> list:
    """Every leaf engine state, composites opened, in layer order."""
    return [leaf for s in states for leaf in (flat_states(s.parts) if isinstance(s, Composite) else [s])]
