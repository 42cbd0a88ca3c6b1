"""Triton kernels of `state_store` / `state_load` (launchers: triton.py).

The same arithmetic as the torch reference (kernels/state/ops.py), in the same order, so the
results agree bit for bit: the lowbias32 hash in int64 masked to 32 bits, the grid step from the
fp32 exponent field, floor(x / step + u), int8 scale amax / 127.
"""

from __future__ import annotations

import triton
import triton.language as tl


@triton.jit
def _uniform(seed, idx):
    """u in [0, 1) from the hash of (seed, element index); idx is int64."""
    x = (idx * 0x9E3779B9 + seed) & 0xFFFFFFFF
    x = x ^ (x >> 16)
    x = (x * 0x7FEB352D) & 0xFFFFFFFF
    x = x ^ (x >> 15)
    x = (x * 0x846CA68B) & 0xFFFFFFFF
    x = x ^ (x >> 16)
    return (x >> 8).to(tl.float32) * (1.0 / 16777216.0)


@triton.jit
def store_float(state, values, total, seed, limit, MANTISSA: tl.constexpr, E_MIN: tl.constexpr,
                STOCHASTIC: tl.constexpr, BF16: tl.constexpr, BLOCK: tl.constexpr):  # fmt: skip
    """fp32 -> bf16/fp16 (the values pointer's type), saturating; BLOCK elements per program."""
    idx = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    mask = idx < total
    x = tl.load(state + idx, mask=mask, other=0.0)
    x = tl.minimum(tl.maximum(x, -limit), limit)
    if STOCHASTIC:
        e = ((x.to(tl.int32, bitcast=True) >> 23) & 0xFF) - 127
        step = ((tl.maximum(e, E_MIN) - MANTISSA + 127) << 23).to(tl.float32, bitcast=True)
        x = tl.floor(x / step + _uniform(seed, idx)) * step
        x = tl.minimum(tl.maximum(x, -limit), limit)
    elif BF16:  # round to nearest even on the bits: the cast below is then exact under any mode
        b = x.to(tl.int32, bitcast=True)
        x = ((b + 0x7FFF + ((b >> 16) & 1)) & -65536).to(tl.float32, bitcast=True)
    tl.store(values + idx, x.to(values.dtype.element_ty), mask=mask)


@triton.jit
def store_int8(state, values, scales, seed, K: tl.constexpr, V: tl.constexpr, GK: tl.constexpr,
               GV: tl.constexpr, BK: tl.constexpr, BV: tl.constexpr, STOCHASTIC: tl.constexpr):  # fmt: skip
    """One program per (sequence*head, row group, column group): amax, scale, quantize."""
    g = tl.program_id(0).to(tl.int64)
    kb, vb = K // GK, V // GV
    nh, r0, c0 = g // (kb * vb), (g // vb) % kb * GK, g % vb * GV
    rows, cols = tl.arange(0, BK), tl.arange(0, BV)
    mask = (rows[:, None] < GK) & (cols[None, :] < GV)
    idx = nh * K * V + (r0 + rows[:, None]) * V + c0 + cols[None, :]
    x = tl.load(state + idx, mask=mask, other=0.0)
    scale = tl.max(tl.max(tl.abs(x), axis=1), axis=0) / 127.0
    safe = tl.where(scale > 0.0, scale, 1.0)
    if STOCHASTIC:
        y = tl.floor(x / safe + _uniform(seed, idx))
    else:
        y = tl.floor(x / safe + 0.5)
    y = tl.minimum(tl.maximum(y, -127.0), 127.0)
    tl.store(values + idx, y.to(tl.int8), mask=mask)
    tl.store(scales + g, scale)


@triton.jit
def load_values(values, scales, state, total, K: tl.constexpr, V: tl.constexpr, GK: tl.constexpr,
                GV: tl.constexpr, SCALED: tl.constexpr, BLOCK: tl.constexpr):  # fmt: skip
    idx = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    mask = idx < total
    x = tl.load(values + idx, mask=mask, other=0).to(tl.float32)
    if SCALED:
        c, r, nh = idx % V, idx // V % K, idx // (K * V)
        x = x * tl.load(scales + (nh * (K // GK) + r // GK) * (V // GV) + c // GV, mask=mask, other=0.0)
    tl.store(state + idx, x, mask=mask)
