"""Per-layer cache state objects: the interface a mixer reads and writes its cache through.

DESIGN.md: "the state is an interface, not a tensor layout". These are the dense, per-batch
implementations used by training and `generate()`; the serving engine supplies paged ones with
the same methods. A mixer must not reach into the tensors behind them.

Every state tracks `seq_len` (tokens consumed so far) and reports `nbytes()` (bytes it really holds).
"""

from __future__ import annotations

import torch


class LayerState:
    kind = "none"

    def __init__(self):
        self.seq_len = 0

    def advance(self, n: int) -> None:
        self.seq_len += n

    def tensors(self) -> list[torch.Tensor]:
        return []

    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in self.tensors())

    def index_select(self, index: torch.Tensor) -> None:
        """Keep/reorder batch rows (beam search, finished-sequence removal)."""
        self._map(lambda t: t.index_select(0, index.to(t.device)))

    def repeat_interleave(self, repeats: int) -> None:
        self._map(lambda t: t.repeat_interleave(repeats, dim=0))

    def _map(self, fn) -> None:
        raise NotImplementedError


class KVState(LayerState):
    """Growing key/value cache for full softmax attention. Tensors are [B, T, Hkv, D]."""

    kind = "kv"

    def __init__(self):
        super().__init__()
        self.k: torch.Tensor | None = None
        self.v: torch.Tensor | None = None

    def append(self, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """k, v [B, t, Hkv, D] for the new tokens -> all keys/values [B, seq_len + t, Hkv, D]."""
        self.k = k if self.k is None else torch.cat([self.k, k], dim=1)
        self.v = v if self.v is None else torch.cat([self.v, v], dim=1)
        return self.k, self.v

    def tensors(self):
        return [t for t in (self.k, self.v) if t is not None]

    def crop(self, length: int) -> None:
        if self.k is not None:
            self.k, self.v = self.k[:, :length], self.v[:, :length]
        self.seq_len = min(self.seq_len, length)

    def _map(self, fn):
        if self.k is not None:
            self.k, self.v = fn(self.k), fn(self.v)


class WindowState(LayerState):
    """Sliding-window cache: keeps only the last `window - 1` tokens' keys/values.

    A query at position i attends to keys i-window+1 .. i, so the next chunk needs at most
    window-1 earlier tokens. `append` returns the context keys and the absolute position of the
    first one, so the mixer can build its mask.
    """

    kind = "window"

    def __init__(self, window: int):
        super().__init__()
        self.window = window
        self.k: torch.Tensor | None = None
        self.v: torch.Tensor | None = None

    def append(self, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, int]:
        """k, v [B, t, Hkv, D] -> (context keys, context values, position of context[0])."""
        k_ctx = k if self.k is None else torch.cat([self.k, k], dim=1)
        v_ctx = v if self.v is None else torch.cat([self.v, v], dim=1)
        start = self.seq_len - (0 if self.k is None else self.k.shape[1])
        keep = self.window - 1
        self.k = k_ctx[:, max(0, k_ctx.shape[1] - keep) :].contiguous()
        self.v = v_ctx[:, max(0, v_ctx.shape[1] - keep) :].contiguous()
        return k_ctx, v_ctx, start

    def tensors(self):
        return [t for t in (self.k, self.v) if t is not None and t.numel()]

    def _map(self, fn):
        if self.k is not None:
            self.k, self.v = fn(self.k), fn(self.v)


class RecurrentState(LayerState):
    """Constant-size recurrent state (linear attention), [B, H, K, V], kept in fp32."""

    kind = "recurrent"

    def __init__(self):
        super().__init__()
        self.state: torch.Tensor | None = None

    def read(self) -> torch.Tensor | None:
        return self.state

    def write(self, state: torch.Tensor) -> None:
        self.state = state

    def tensors(self):
        return [] if self.state is None else [self.state]

    def _map(self, fn):
        if self.state is not None:
            self.state = fn(self.state)


class LatentState(LayerState):
    """MLA cache: latent `c_kv` [B, T, R] and the shared RoPE key `k_pe` [B, T, Dr]."""

    kind = "latent"

    def __init__(self):
        super().__init__()
        self.c_kv: torch.Tensor | None = None
        self.k_pe: torch.Tensor | None = None

    def append(self, c_kv: torch.Tensor, k_pe: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        self.c_kv = c_kv if self.c_kv is None else torch.cat([self.c_kv, c_kv], dim=1)
        self.k_pe = k_pe if self.k_pe is None else torch.cat([self.k_pe, k_pe], dim=1)
        return self.c_kv, self.k_pe

    def tensors(self):
        return [t for t in (self.c_kv, self.k_pe) if t is not None]

    def crop(self, length: int) -> None:
        if self.c_kv is not None:
            self.c_kv, self.k_pe = self.c_kv[:, :length], self.k_pe[:, :length]
        self.seq_len = min(self.seq_len, length)

    def _map(self, fn):
        if self.c_kv is not None:
            self.c_kv, self.k_pe = fn(self.c_kv), fn(self.k_pe)


class CompositeState(LayerState):
    """State of an intra-layer hybrid: one sub-state per part."""

    kind = "composite"

    def __init__(self, parts: list[LayerState]):
        super().__init__()
        self.parts = parts

    def advance(self, n: int) -> None:
        super().advance(n)
        for p in self.parts:
            p.advance(n)

    def tensors(self):
        return [t for p in self.parts for t in p.tensors()]

    def index_select(self, index):
        for p in self.parts:
            p.index_select(index)

    def repeat_interleave(self, repeats):
        for p in self.parts:
            p.repeat_interleave(repeats)
