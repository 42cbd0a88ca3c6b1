"""Triton kernel for paged GQA decode (window, sinks, strided caches): one program per (sequence,
kv head), walking the block table.

The online softmax runs in base 2 (scores pre-multiplied by scale * log2 e). A sink is the
softmax's starting point: the running max starts at the sink logit and the running sum at 1
(exp of the sink against itself), so it takes its share of the mass and adds no value. Without
sinks the max starts at -1e30, not -inf: a block whose keys are all masked then gets
p = exp2(-inf) = 0 and rescale exp2(0) = 1 instead of nan.
"""

from __future__ import annotations

import triton
import triton.language as tl

LOG2E = tl.constexpr(1.4426950408889634)


@triton.jit
def paged_decode(
    q, k_cache, v_cache, block_table, seq_lens, sinks, o, scale, MAX_PAGES, WINDOW,
    K_SP, K_ST, K_SH, V_SP, V_ST, V_SH,
    H: tl.constexpr, HKV: tl.constexpr, D: tl.constexpr, DV: tl.constexpr, PAGE: tl.constexpr,
    G: tl.constexpr, BG: tl.constexpr, BD: tl.constexpr, BDV: tl.constexpr, HAS_SINKS: tl.constexpr,
    HAS_WINDOW: tl.constexpr,
):  # fmt: skip
    """One program per (sequence, kv head): the G query heads of the group share each page load.
    q [N, H, D], caches [P, PAGE, HKV, D*] with element strides K_* / V_* for (page, token, head)
    (views of one buffer are fine; the last dim is contiguous), block_table [N, MAX_PAGES], seq_lens
    [N]. With a window the loop starts at the page of the first visible key: earlier table entries
    may be -1 (freed pages) and are never read."""
    i_n, i_kv = tl.program_id(0), tl.program_id(1)
    i_n64 = i_n.to(tl.int64)
    seqlen = tl.load(seq_lens + i_n)
    lo = 0
    if HAS_WINDOW:
        lo = tl.maximum(seqlen - WINDOW, 0)
    o_g, o_d, o_dv, o_p = tl.arange(0, BG), tl.arange(0, BD), tl.arange(0, BDV), tl.arange(0, PAGE)
    m_g = o_g < G
    heads = i_kv * G + o_g  # query heads of this kv head
    b_q = tl.load(q + (i_n64 * H + heads[:, None]) * D + o_d[None, :], mask=m_g[:, None] & (o_d < D)[None, :],
                  other=0.0).to(tl.float32)  # [BG, BD]  # fmt: skip
    qk_scale = scale * LOG2E
    if HAS_SINKS:
        m_i = tl.load(sinks + heads, mask=m_g, other=0.0).to(tl.float32) * LOG2E
        l_i = tl.zeros([BG], dtype=tl.float32) + 1.0
    else:
        m_i = tl.zeros([BG], dtype=tl.float32) - 1.0e30
        l_i = tl.zeros([BG], dtype=tl.float32)
    acc = tl.zeros([BG, BDV], dtype=tl.float32)
    for p in range(lo // PAGE, tl.cdiv(seqlen, PAGE)):
        page = tl.load(block_table + i_n64 * MAX_PAGES + p).to(tl.int64)
        pos = p * PAGE + o_p
        m_p = (pos < seqlen) & (pos >= lo)
        k_rows = page * K_SP + o_p[:, None] * K_ST + i_kv * K_SH
        v_rows = page * V_SP + o_p[:, None] * V_ST + i_kv * V_SH
        b_k = tl.load(k_cache + k_rows + o_d[None, :], mask=m_p[:, None] & (o_d < D)[None, :], other=0.0)
        b_v = tl.load(v_cache + v_rows + o_dv[None, :], mask=m_p[:, None] & (o_dv < DV)[None, :], other=0.0)
        # [BG, PAGE] scores by broadcast-and-sum: G and PAGE may be below tl.dot's 16-row minimum.
        s = tl.sum(b_q[:, None, :] * b_k.to(tl.float32)[None, :, :], 2) * qk_scale
        s = tl.where(m_p[None, :], s, float("-inf"))
        m_new = tl.maximum(m_i, tl.max(s, 1))
        alpha = tl.exp2(m_i - m_new)
        pr = tl.exp2(s - m_new[:, None])
        l_i = l_i * alpha + tl.sum(pr, 1)
        acc = acc * alpha[:, None] + tl.sum(pr[:, :, None] * b_v.to(tl.float32)[None, :, :], 1)
        m_i = m_new
    acc = acc / l_i[:, None]
    tl.store(o + (i_n64 * H + heads[:, None]) * DV + o_dv[None, :], acc.to(o.dtype.element_ty),
             mask=m_g[:, None] & (o_dv < DV)[None, :])  # fmt: skip
