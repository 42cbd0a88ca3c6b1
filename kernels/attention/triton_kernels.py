"""Triton kernel for softmax attention: sliding window + sinks prefill forward.

It uses the online softmax in base 2 (scores pre-multiplied by scale * log2 e). A sink is the
softmax's starting point: the running max starts at the sink logit and the running sum at 1
(exp of the sink against itself), so it takes its share of the mass and adds no value. Without
sinks the max starts at -1e30, not -inf: a row whose first key block is fully masked then gets
p = exp2(-inf) = 0 and rescale exp2(0) = 1 instead of nan.
"""

from __future__ import annotations

import triton
import triton.language as tl

LOG2E = tl.constexpr(1.4426950408889634)


@triton.jit
def swa_fwd(
    q, k, v, sinks, o, scale, TQ, TK, WINDOW,
    H: tl.constexpr, HKV: tl.constexpr, D: tl.constexpr, DV: tl.constexpr,
    BM: tl.constexpr, BN: tl.constexpr, BD: tl.constexpr, BDV: tl.constexpr,
    HAS_WINDOW: tl.constexpr, HAS_SINKS: tl.constexpr,
):  # fmt: skip
    """One program per (query block, batch x head). q [B, TQ, H, D], k [B, TK, HKV, D],
    v [B, TK, HKV, DV]; query i sits at position TK - TQ + i (bottom-right aligned)."""
    i_m, i_bh = tl.program_id(0), tl.program_id(1)
    i_b, i_h = (i_bh // H).to(tl.int64), i_bh % H
    i_kv = i_h // (H // HKV)
    offset = TK - TQ
    o_m = i_m * BM + tl.arange(0, BM)  # query rows
    pos = offset + o_m  # their positions
    o_d, o_dv, o_n = tl.arange(0, BD), tl.arange(0, BDV), tl.arange(0, BN)
    m_q = o_m < TQ
    b_q = tl.load(q + ((i_b * TQ + o_m[:, None]) * H + i_h) * D + o_d[None, :],
                  mask=m_q[:, None] & (o_d < D)[None, :], other=0.0)  # fmt: skip
    qk_scale = scale * LOG2E
    if HAS_SINKS:
        m_i = tl.zeros([BM], dtype=tl.float32) + tl.load(sinks + i_h).to(tl.float32) * LOG2E
        l_i = tl.zeros([BM], dtype=tl.float32) + 1.0
    else:
        m_i = tl.zeros([BM], dtype=tl.float32) - 1.0e30
        l_i = tl.zeros([BM], dtype=tl.float32)
    acc = tl.zeros([BM, BDV], dtype=tl.float32)
    hi = tl.minimum(TK, offset + (i_m + 1) * BM)  # past the block's last query nothing is visible
    lo = 0
    if HAS_WINDOW:
        lo = tl.maximum(0, offset + i_m * BM - WINDOW + 1) // BN * BN
    for start in range(lo, hi, BN):
        cols = start + o_n
        m_k = cols < TK
        b_k = tl.load(k + ((i_b * TK + cols[:, None]) * HKV + i_kv) * D + o_d[None, :],
                      mask=m_k[:, None] & (o_d < D)[None, :], other=0.0)  # fmt: skip
        b_v = tl.load(v + ((i_b * TK + cols[:, None]) * HKV + i_kv) * DV + o_dv[None, :],
                      mask=m_k[:, None] & (o_dv < DV)[None, :], other=0.0)  # fmt: skip
        s = tl.dot(b_q, tl.trans(b_k)) * qk_scale  # [BM, BN]
        allowed = (cols[None, :] <= pos[:, None]) & m_k[None, :]
        if HAS_WINDOW:
            allowed = allowed & (pos[:, None] - cols[None, :] < WINDOW)
        s = tl.where(allowed, s, float("-inf"))
        m_new = tl.maximum(m_i, tl.max(s, 1))
        alpha = tl.exp2(m_i - m_new)
        p = tl.exp2(s - m_new[:, None])
        l_i = l_i * alpha + tl.sum(p, 1)
        acc = acc * alpha[:, None] + tl.dot(p.to(b_v.dtype), b_v)
        m_i = m_new
    acc = acc / tl.where(l_i > 0, l_i, 1.0)[:, None]  # l_i = 0 only on padding rows (not stored)
    tl.store(o + ((i_b * TQ + o_m[:, None]) * H + i_h) * DV + o_dv[None, :], acc.to(o.dtype.element_ty),
             mask=m_q[:, None] & (o_dv < DV)[None, :])  # fmt: skip
