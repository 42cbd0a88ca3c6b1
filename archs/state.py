"""Cache states: the interface through which a mixer reads and writes its layer's cache.

The state does the attention over what it holds (docs/cache_protocol.md). A mixer projects its
q/k/v (or latent) for the new tokens and hands them to its layer's state, which stores them and
returns the attention output:

    o = state.attend(q, k, v, scale=, window=, sinks=)          # full, swa      -> [B, T, H, Dv]
    o = state.attend_linear(q, k, v, slope=, chunk_size=)       # lightning      -> [B, T, H, V]
    o = state.attend_latent(q_nope, q_pe, c_kv, k_pe, mla=)     # mla            -> [B, T, H, Dv]
    state.parts                                                 # intra: one state per part

plus `positions(batch, t, device)` (absolute positions of the new tokens, when the caller gave
none) and `advance(t)` (after the layer ran). Two implementations exist: the dense ones below
(training, `generate()`, probes: one rectangular batch, tensors concatenated and the dense ops
called), and the serving engine's (serve/layer_states.py: pages and slots, packed batches of
sequences of different lengths, the paged/varlen ops). No mixer looks at which one it has.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import torch

from ..kernels import lightning_decode, lightning_prefill, swa_prefill

# --- what a layer's cache looks like, for an engine that lays out its own storage ----------------


@dataclass(frozen=True)
class KVSpec:
    """Softmax attention: per token Hkv keys of D and Hkv values of Dv; `window` None grows with T."""

    kind = "kv"
    num_kv_heads: int
    head_dim: int
    value_dim: int
    window: int | None = None


@dataclass(frozen=True)
class LatentSpec:
    """MLA: per token one latent of `latent_dim` and one shared rope key of `rope_dim`."""

    kind = "latent"
    latent_dim: int
    rope_dim: int


@dataclass(frozen=True)
class RecurrentSpec:
    """Linear attention: one [H, K, V] state per sequence, whatever its length."""

    kind = "recurrent"
    num_heads: int
    key_dim: int
    value_dim: int


@dataclass(frozen=True)
class CompositeSpec:
    """Intra-layer hybrid: one spec per part."""

    kind = "composite"
    parts: tuple


# --- the protocol ---------------------------------------------------------------------------------


@runtime_checkable
class CacheState(Protocol):
    """What every layer state offers, whatever its kind."""

    kind: str  # "kv", "window", "recurrent", "latent", "composite"

    def positions(self, batch: int, t: int, device: torch.device) -> torch.Tensor:
        """Absolute positions [B, T] of the next `t` tokens of each sequence."""

    def advance(self, n: int) -> None:
        """The layer consumed `n` more tokens per sequence."""


class SoftmaxCache(CacheState, Protocol):
    def attend(self, q, k, v, *, scale: float, window: int | None, sinks) -> torch.Tensor:
        """q [B, T, H, D], k/v [B, T, Hkv, D*] of the new tokens -> o [B, T, H, Dv]: causal (and
        windowed) softmax over everything held plus the new tokens, which are then held too."""


class LinearCache(CacheState, Protocol):
    storage_dtype: torch.dtype  # what the state is stored in; the update math is fp32

    def attend_linear(self, q, k, v, *, slope: torch.Tensor, chunk_size: int) -> torch.Tensor:
        """q, k [B, T, H, K], v [B, T, H, V] -> o [B, T, H, V] from the held recurrent state,
        which then holds the state after the new tokens."""


class LatentCache(CacheState, Protocol):
    def attend_latent(self, q_nope, q_pe, c_kv, k_pe, *, mla) -> torch.Tensor:
        """MLA: q_nope/q_pe [B, T, H, *], latent c_kv [B, T, R] and rope key k_pe [B, T, Dr] of the
        new tokens -> o [B, T, H, Dv]. `mla` is the mixer: `attend_context` (its naive/absorbed
        choice over a dense context), or `absorb`/`unabsorb` around a latent-space op."""


class DenseState:
    """Base of the dense states: one rectangular batch, `seq_len` tokens held per sequence."""

    kind = "none"

    def __init__(self):
        self.seq_len = 0

    def positions(self, batch: int, t: int, device) -> torch.Tensor:
        return torch.arange(self.seq_len, self.seq_len + t, device=device).expand(batch, t)

    def advance(self, n: int) -> None:
        self.seq_len += n

    def tensors(self) -> list[torch.Tensor]:
        return []

    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in self.tensors())

    # Dense-only: rows of one rectangular batch (beam search, finished-sequence removal).
    def index_select(self, index: torch.Tensor) -> None:
        self._map(lambda t: t.index_select(0, index.to(t.device)))

    def repeat_interleave(self, repeats: int) -> None:
        self._map(lambda t: t.repeat_interleave(repeats, dim=0))

    def _map(self, fn) -> None:
        raise NotImplementedError


def _cat(held: torch.Tensor | None, new: torch.Tensor) -> torch.Tensor:
    return new if held is None else torch.cat([held, new], dim=1)


class KVState(DenseState):
    """Growing key/value cache for full softmax attention. Tensors are [B, T, Hkv, D]."""

    kind = "kv"
    croppable = True

    def __init__(self):
        super().__init__()
        self.k: torch.Tensor | None = None
        self.v: torch.Tensor | None = None

    def attend(self, q, k, v, *, scale, window, sinks):
        self.k, self.v = _cat(self.k, k), _cat(self.v, v)
        # The op aligns the queries to the last keys (flash-attention's KV-cache convention).
        return swa_prefill(q, self.k, self.v, scale, window, sinks)

    def tensors(self):
        return [t for t in (self.k, self.v) if t is not None]

    def crop(self, length: int) -> None:
        if self.k is not None:
            self.k, self.v = self.k[:, :length], self.v[:, :length]
        self.seq_len = min(self.seq_len, length)

    def _map(self, fn):
        if self.k is not None:
            self.k, self.v = fn(self.k), fn(self.v)


class WindowState(DenseState):
    """Sliding-window cache: keeps only the last `window - 1` tokens' keys/values.

    A query at position i attends to keys i-window+1 .. i, so the next chunk needs at most
    window-1 earlier tokens.
    """

    kind = "window"
    croppable = False

    def __init__(self, window: int):
        super().__init__()
        self.window = window
        self.k: torch.Tensor | None = None
        self.v: torch.Tensor | None = None

    def attend(self, q, k, v, *, scale, window, sinks):
        assert window == self.window
        k_ctx, v_ctx = _cat(self.k, k), _cat(self.v, v)
        keep = self.window - 1
        self.k = k_ctx[:, max(0, k_ctx.shape[1] - keep) :].contiguous()
        self.v = v_ctx[:, max(0, v_ctx.shape[1] - keep) :].contiguous()
        return swa_prefill(q, k_ctx, v_ctx, scale, window, sinks)

    def tensors(self):
        return [t for t in (self.k, self.v) if t is not None and t.numel()]

    def _map(self, fn):
        if self.k is not None:
            self.k, self.v = fn(self.k), fn(self.v)


class RecurrentState(DenseState):
    """Constant-size recurrent state (linear attention), [B, H, K, V], kept in fp32."""

    kind = "recurrent"
    croppable = False
    storage_dtype = torch.float32

    def __init__(self):
        super().__init__()
        self.state: torch.Tensor | None = None

    def attend_linear(self, q, k, v, *, slope, chunk_size):
        if q.shape[1] == 1 and self.state is not None:
            # Decode: one state update. For t > 1 the chunked form (a few matmuls) beats a t-step loop.
            o, self.state = lightning_decode(q[:, 0], k[:, 0], v[:, 0], slope, self.state)
            return o[:, None]  # [B, 1, H, V]
        o, self.state = lightning_prefill(
            q, k, v, slope, self.state, output_final_state=True, chunk_size=chunk_size
        )
        return o

    def read(self) -> torch.Tensor | None:
        return self.state

    def tensors(self):
        return [] if self.state is None else [self.state]

    def _map(self, fn):
        if self.state is not None:
            self.state = fn(self.state)


class LatentState(DenseState):
    """MLA cache: latent `c_kv` [B, T, R] and the shared RoPE key `k_pe` [B, T, Dr]."""

    kind = "latent"
    croppable = True

    def __init__(self):
        super().__init__()
        self.c_kv: torch.Tensor | None = None
        self.k_pe: torch.Tensor | None = None

    def attend_latent(self, q_nope, q_pe, c_kv, k_pe, *, mla):
        self.c_kv, self.k_pe = _cat(self.c_kv, c_kv), _cat(self.k_pe, k_pe)
        return mla.attend_context(q_nope, q_pe, self.c_kv, self.k_pe, cached=True)

    def tensors(self):
        return [t for t in (self.c_kv, self.k_pe) if t is not None]

    def crop(self, length: int) -> None:
        if self.c_kv is not None:
            self.c_kv, self.k_pe = self.c_kv[:, :length], self.k_pe[:, :length]
        self.seq_len = min(self.seq_len, length)

    def _map(self, fn):
        if self.c_kv is not None:
            self.c_kv, self.k_pe = fn(self.c_kv), fn(self.k_pe)


class CompositeState(DenseState):
    """State of an intra-layer hybrid: one sub-state per part."""

    kind = "composite"

    def __init__(self, parts: list[DenseState]):
        super().__init__()
        self.parts = parts
        self.croppable = all(p.croppable for p in parts)

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

    def crop(self, length: int) -> None:
        for p in self.parts:
            p.crop(length)
        self.seq_len = min(self.seq_len, length)
