"""The cache manager: one memory budget for every layer's cache, laid out per kind of layer.

Layers are grouped by what their cache needs (archs/state.py specs):
- "paged": full softmax and MLA layers, whose caches grow with the sequence. They share one block
  table per sequence; a block holds `block_size` tokens of every such layer (K and V pages, or
  latent pages), so its size is block_size x the per-token bytes summed over those layers.
- "window:W": sliding-window layers of window W. Blocks that fall wholly behind the window are
  freed as the sequence advances (their table entries become -1).
- "slots": lightning layers: one [H, K, V] state per running sequence and layer, in the storage
  dtype (int8 with its fp32 scales beside it: `StateSlots`); no blocks at all.

The budget is split once, at start: enough slots and window blocks for `max_seqs` sequences
(fewer when memory is short, but always enough room for one sequence of max_model_len), and
every remaining byte to paged blocks. With prefix caching (prefix_cache.py) blocks are
reference-counted and cached prefixes stay in the same pools; recurrent-state checkpoints take
pages of the paged pool (or, without paged layers, checkpoint-sized pages from the rest of the
budget), and everything the tree alone holds is evicted before a running request is preempted. Storage is allocated then, so serving never allocates cache
memory again and cannot run out of it: admission waits, and a running sequence that needs a
block when none is free preempts the youngest one (the scheduler recomputes it later).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch

from ..archs import CompositeSpec, KVSpec, LatentSpec, RecurrentSpec
from ..kernels import STORAGE_DTYPES, scale_shape, state_group, stored_state_bytes
from .config import EngineConfig, parse_memory
from .prefix_cache import PrefixCache
from .state_checkpoints import CheckpointStore, PageArena

PAGED, SLOTS, CHECKPOINTS = "paged", "slots", "checkpoints"


def window_group(window: int) -> str:
    return f"window:{window}"


def flat_specs(spec) -> list:
    return [s for part in spec.parts for s in flat_specs(part)] if isinstance(spec, CompositeSpec) else [spec]


def spec_group(spec) -> str:
    if isinstance(spec, RecurrentSpec):
        return SLOTS
    if isinstance(spec, KVSpec) and spec.window is not None:
        return window_group(spec.window)
    return PAGED


def token_bytes(spec, elem: int) -> int:
    if isinstance(spec, KVSpec):
        return spec.num_kv_heads * (spec.head_dim + spec.value_dim) * elem
    assert isinstance(spec, LatentSpec)
    return (spec.latent_dim + spec.rope_dim) * elem


class BlockPool:
    """Reference-counted block (or slot, or page) ids 0..n-1. Without prefix caching every id has
    one owner; with it, a block of a cached prefix is also held by the prefix tree and by every
    request that hit it, and returns to the free list when the last of them lets go."""

    def __init__(self, n: int):
        self.capacity = n
        self.free_ids = list(range(n - 1, -1, -1))  # pop() hands out low ids first
        self.refs = [0] * n

    @property
    def num_free(self) -> int:
        return len(self.free_ids)

    def take(self, n: int) -> list[int]:
        assert n <= len(self.free_ids)
        ids = [self.free_ids.pop() for _ in range(n)]
        for i in ids:
            self.refs[i] = 1
        return ids

    def ref(self, i: int) -> None:
        assert self.refs[i] > 0, f"block {i} is free"
        self.refs[i] += 1

    def give(self, ids) -> None:
        for i in ids:
            if i < 0:
                continue
            assert self.refs[i] > 0, f"block {i} given back twice"
            self.refs[i] -= 1
            if self.refs[i] == 0:
                self.free_ids.append(i)


@dataclass
class StateSlots:
    """One recurrent layer's slots: values [S, H, K, V] in the storage dtype, and for int8 the fp32
    scales [S, H, K/gk, V/gv] of `group` (kernels/state/ops.py). `seed` is the layer's stream of
    stochastic-rounding seeds (its index among the recurrent layers)."""

    values: torch.Tensor
    scales: torch.Tensor | None
    group: tuple[int, int] | None
    dtype: str
    rounding: str
    seed: int = 0

    @classmethod
    def allocate(cls, n: int, spec: RecurrentSpec, config: EngineConfig, device) -> StateSlots:
        shape = (n, spec.num_heads, spec.key_dim, spec.value_dim)
        values = torch.zeros(shape, dtype=STORAGE_DTYPES[config.state_dtype], device=device)
        group = scales = None
        if config.state_dtype == "int8":
            group = state_group(spec.key_dim, spec.value_dim, config.state_scales)
            scales = torch.zeros(scale_shape(shape, group), dtype=torch.float32, device=device)
        return cls(values, scales, group, config.state_dtype, config.state_rounding)

    def zero(self, slot: int) -> None:
        self.values[slot].zero_()
        if self.scales is not None:
            self.scales[slot].zero_()

    def nbytes(self) -> int:
        tensors = [self.values] if self.scales is None else [self.values, self.scales]
        return sum(t.numel() * t.element_size() for t in tensors)


@dataclass
class Holding:
    """What one request holds: a block table per block group (-1: freed behind the window), a slot,
    and with prefix caching its place in the prefix tree (prefix_cache.py)."""

    tables: dict[str, list[int]] = field(default_factory=dict)
    slot: int | None = None
    node: object = None  # the tree node its computed whole blocks reach
    cached_blocks: int = 0  # blocks on the tree's path (hit or inserted)
    num_cached: int = 0  # tokens it found cached at admission
    branch: int | None = None  # a branch point it passes (tokens): a checkpoint goes there
    output_checkpoint: object = None  # the node of its latest sequence-end checkpoint


class CacheManager:
    def __init__(
        self,
        specs: list,
        config: EngineConfig,
        dtype: torch.dtype,
        device,
        max_model_len: int,
        prefill_cost=None,
    ):
        """specs: one cache spec per model layer (`mixer.cache_spec()`); prefill_cost(start, end):
        FLOPs of prefilling tokens [start, end) (flops.PrefillCost), for prefix caching's eviction."""
        self.config, self.device, self.dtype = config, torch.device(device), dtype
        self.block_size = bs = config.block_size
        elem = torch.empty((), dtype=dtype).element_size()
        self.layer_specs = specs
        leaves = [s for spec in specs for s in flat_specs(spec)]
        # Per-token bytes of each block group, and bytes of one sequence's slots.
        self.token_bytes: dict[str, int] = {}
        for s in leaves:
            group = spec_group(s)
            if group != SLOTS:
                self.token_bytes[group] = self.token_bytes.get(group, 0) + token_bytes(s, elem)
        self.slot_bytes = sum(
            stored_state_bytes(s.num_heads, s.key_dim, s.value_dim, config.state_dtype, config.state_scales)
            for s in leaves
            if isinstance(s, RecurrentSpec)
        )
        self.windows = {g: int(g.split(":")[1]) for g in self.token_bytes if g != PAGED}
        self.budget = budget = parse_memory(config.cache_memory, self.device)
        chunk = config.max_num_batched_tokens
        per_seq = self.slot_bytes + sum(
            (math.ceil((w - 1) / bs) + 2) * bs * self.token_bytes[g] for g, w in self.windows.items()
        )
        extra = sum((math.ceil(chunk / bs) + 1) * bs * self.token_bytes[g] for g in self.windows)
        one_long = math.ceil(max_model_len / bs) * bs * self.token_bytes.get(PAGED, 0)
        room = budget - extra - one_long
        self.max_seqs = config.max_num_seqs if per_seq == 0 else min(config.max_num_seqs, room // per_seq)
        if room < 0 or self.max_seqs < 1:
            need = extra + one_long + per_seq
            raise ValueError(
                f"cache_memory = {budget} bytes cannot hold one sequence of max_model_len = {max_model_len} "
                f"tokens; it needs at least {need} bytes (raise cache_memory or lower max_model_len)"
            )
        self.pools: dict[str, BlockPool] = {}
        for g, w in self.windows.items():
            self.pools[g] = BlockPool(
                self.max_seqs * (math.ceil((w - 1) / bs) + 2) + math.ceil(chunk / bs) + 1
            )
        if PAGED in self.token_bytes:
            left = budget - self.max_seqs * per_seq - extra
            self.pools[PAGED] = BlockPool(left // (bs * self.token_bytes[PAGED]))
        self.slots = BlockPool(self.max_seqs if self.slot_bytes else 0)
        self.holdings: dict[str, Holding] = {}
        self.group_tensors: dict[str, list[torch.Tensor]] = {g: [] for g in self.pools}
        self.storage = [self._allocate(spec) for spec in specs]  # per layer, mirrors the spec tree
        self._recurrent = [
            slots
            for spec, store in zip(specs, self.storage, strict=True)
            for leaf, slots in zip(flat_specs(spec), _flat_storage(spec, store), strict=True)
            if isinstance(leaf, RecurrentSpec)
        ]
        for i, slots in enumerate(self._recurrent):
            slots.seed = i
        self.prefix = self.checkpoints = self.checkpoint_pool = self._checkpoint_pages = None
        self.checkpoint_pool_name = CHECKPOINTS
        if config.enable_prefix_caching:
            if self._recurrent:
                self._checkpoint_arena(budget - self.max_seqs * per_seq - extra)
            self.prefix = PrefixCache(
                self,
                prefill_cost or (lambda start, end: float(end - start)),
                config.prefix_eviction,
                config.prefix_eviction_alpha,
                config.state_checkpoint_interval,
            )

    def _checkpoint_arena(self, left: int) -> None:
        """Checkpoints live in the paged pool's pages when there is one (they and KV blocks compete
        for the same bytes), else in checkpoint-sized pages of their own from the rest of the budget."""
        if PAGED in self.pools:
            arena, self.checkpoint_pool_name = PageArena(self.group_tensors[PAGED]), PAGED
        else:
            n = max(0, left) // self.slot_bytes
            self.checkpoint_pool = BlockPool(n)
            page = torch.zeros(n, self.slot_bytes, dtype=torch.uint8, device=self.device)
            arena = PageArena([page])
            self._checkpoint_pages = page
        self.checkpoints = CheckpointStore(arena, self._recurrent)
        assert self.checkpoints.checkpoint_bytes == self.slot_bytes

    # --- storage ---------------------------------------------------------------------------------
    def _allocate(self, spec):
        if isinstance(spec, CompositeSpec):
            return [self._allocate(p) for p in spec.parts]
        group, bs = spec_group(spec), self.block_size
        if group == SLOTS:
            return StateSlots.allocate(self.slots.capacity, spec, self.config, self.device)
        n = self.pools[group].capacity
        if isinstance(spec, LatentSpec):  # [c_kv | k_pe] per token: one page tensor
            pages = torch.zeros(n, bs, spec.latent_dim + spec.rope_dim, dtype=self.dtype, device=self.device)
            self.group_tensors[group].append(pages)
            return pages
        # Head-major pages [P, Hkv, block, D]: a decode kernel reading one (sequence, head) walks
        # contiguous [block, D] runs instead of a D-wide slice of every token row (1.8x faster on
        # a cold cache here). The ops see them as [P, block, Hkv, D] views.
        k = torch.zeros(n, spec.num_kv_heads, bs, spec.head_dim, dtype=self.dtype, device=self.device)
        v = torch.zeros(n, spec.num_kv_heads, bs, spec.value_dim, dtype=self.dtype, device=self.device)
        self.group_tensors[group] += [k, v]
        return k, v

    def allocated_bytes(self) -> int:
        def size(x):
            if isinstance(x, torch.Tensor):
                return x.numel() * x.element_size()
            if isinstance(x, StateSlots):
                return x.nbytes()
            return sum(size(y) for y in x)

        extra = self._checkpoint_pages
        return sum(size(s) for s in self.storage) + (0 if extra is None else size(extra))

    # --- pools -----------------------------------------------------------------------------------
    def pool(self, name: str) -> BlockPool:
        return self.checkpoint_pool if name == CHECKPOINTS else self.pools[name]

    def all_pool_names(self) -> list[str]:
        names = list(self.pools)
        return names if self.checkpoint_pool is None else [*names, CHECKPOINTS]

    def block_bytes(self, group: str) -> int:
        return self.block_size * self.token_bytes[group]

    def copy_block(self, group: str, src: int, dst: int) -> None:
        for t in self.group_tensors[group]:
            t[dst] = t[src]

    def reclaim(self, need: dict[str, int]) -> bool:
        """Make `need` ids free in each named pool, evicting cached prefixes (never a running
        request's blocks); False if the prefix cache cannot free enough."""
        if all(self.pool(name).num_free >= n for name, n in need.items()):
            return True
        return self.prefix is not None and self.prefix.evict(need)

    # --- per request -----------------------------------------------------------------------------
    def _new_blocks(self, holding: Holding | None, end: int) -> dict[str, int]:
        """Blocks each group must add so its table (freed window entries included) covers [0, end)."""
        need = {}
        for g in self.pools:
            have = 0 if holding is None else len(holding.tables[g])
            need[g] = max(0, math.ceil(end / self.block_size) - have)
        return need

    def has_free_slot(self) -> bool:
        return not self.slot_bytes or self.slots.num_free > 0

    def admit(self, request_id: str, tokens: list[int] | None = None) -> int:
        """Take a slot (call has_free_slot first); with prefix caching share the longest cached
        prefix of `tokens` and restore its state. -> tokens the request need not compute."""
        assert request_id not in self.holdings
        holding = Holding(tables={g: [] for g in self.pools})
        if self.slot_bytes:
            holding.slot = self.slots.take(1)[0]
            for layer in self._recurrent:
                layer.zero(holding.slot)  # a new sequence starts from the zero state
        self.holdings[request_id] = holding
        if self.prefix is None or tokens is None:
            return 0
        return self.prefix.acquire(holding, tokens)

    def recurrent_storage(self) -> list[StateSlots]:
        """The state slots of every recurrent layer (or part), in layer order."""
        return list(self._recurrent)

    def snapshot(self, request_id: str) -> list:
        """Copies of the request's state slots, as stored (a draft model's speculative rollback)."""
        slot = self.holdings[request_id].slot
        return [
            (s.values[slot].clone(), None if s.scales is None else s.scales[slot].clone())
            for s in self._recurrent
        ]

    def restore(self, request_id: str, snapshot: list) -> None:
        slot = self.holdings[request_id].slot
        for slots, (values, scales) in zip(self._recurrent, snapshot, strict=True):
            slots.values[slot].copy_(values)
            if scales is not None:
                slots.scales[slot].copy_(scales)

    def trim(self, request_id: str, start: int) -> None:
        """Free the window blocks that no query from token `start` on can see. The engine calls it
        after every step, so the next step's chunk (which starts there) finds them freed."""
        holding = self.holdings[request_id]
        for g, w in self.windows.items():
            table = holding.tables[g]
            dead = max(0, start - w + 1) // self.block_size  # blocks wholly before the window
            for b in range(min(dead, len(table))):
                if table[b] >= 0:
                    self.pools[g].give([table[b]])
                    table[b] = -1

    def can_extend(self, request_id: str, start: int, n: int) -> bool:
        """Whether the blocks for tokens up to start + n can be had, evicting cached prefixes first."""
        return self.reclaim(self._new_blocks(self.holdings[request_id], start + n))

    def extend(self, request_id: str, start: int, n: int) -> None:
        """Cover tokens up to start + n (call can_extend first)."""
        holding = self.holdings[request_id]
        for g, k in self._new_blocks(holding, start + n).items():
            holding.tables[g].extend(self.pools[g].take(k))

    def free(self, request_id: str) -> None:
        holding = self.holdings.pop(request_id, None)
        if holding is None:
            return
        if self.prefix is not None:
            self.prefix.release(holding)
        for g, table in holding.tables.items():
            self.pools[g].give(table)
        if holding.slot is not None:
            self.slots.give([holding.slot])

    # --- accounting ------------------------------------------------------------------------------
    def request_bytes(self, request_id: str) -> int:
        holding = self.holdings[request_id]
        blocks = sum(
            sum(1 for b in table if b >= 0) * self.block_size * self.token_bytes[g]
            for g, table in holding.tables.items()
        )
        return blocks + (self.slot_bytes if holding.slot is not None else 0)

    def usage(self) -> dict[str, tuple[int, int]]:
        """(used, free) per pool: block groups ('paged', 'window:W') and 'slots'."""
        pools = {name: self.pool(name) for name in self.all_pool_names()} | {SLOTS: self.slots}
        return {name: (p.capacity - p.num_free, p.num_free) for name, p in pools.items()}

    def all_free(self) -> bool:
        pools = [*(self.pool(n) for n in self.all_pool_names()), self.slots]
        return not self.holdings and all(p.num_free == p.capacity for p in pools)


def _flat_storage(spec, store) -> list:
    if isinstance(spec, CompositeSpec):
        return [t for part, s in zip(spec.parts, store, strict=True) for t in _flat_storage(part, s)]
    return [store]
