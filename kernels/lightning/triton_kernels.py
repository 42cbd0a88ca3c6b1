"""Triton kernels for MiniMax lightning attention (chunked prefill forward/backward, decode step).

Math and symbols as in `torch_chunk.py`: chunks of BT tokens, qd_i = exp(-s (i+1)),
kd_j = exp(-s (n-1-j)), bd = exp(-s n) for a chunk of n tokens, M_ij = exp(-s (i-j)) for i >= j.
Tensors are fla's layout, q/k [B, T, H, K], v [B, T, H, V] (contiguous), states [., H, K, V] fp32.
A packed batch is B = 1 with `cu_seqlens`; `chunk_offsets[n]` is the first global chunk of
sequence n and `chunk_indices[c] = (n, chunk within n)`.

Four prefill kernels, fla's split (so the parallel ones run over every chunk at once):
  states_fwd   one program per (V block, sequence x head): walks the chunks, stores the state
               entering each chunk (hs) and the final state
  output_fwd   one program per (V block, chunk, head): o = (Q K^T ⊙ M) V + (Q ⊙ qd) S_c
  dstates_bwd  reverse walk: dhs[c] = gradient of the state leaving chunk c, and dh0
  dqkv_bwd     one program per (chunk, head): dq, dk, dv of the chunk from hs, dhs
Exponents are clamped before masking: exp of a masked entry could overflow, and inf * 0 is nan.
"""

from __future__ import annotations

import triton
import triton.language as tl


@triton.jit
def _bounds(cu_seqlens, chunk_offsets, i_n, T, BT: tl.constexpr, VARLEN: tl.constexpr):
    """-> first token, length, first global chunk of sequence i_n."""
    if VARLEN:
        bos = tl.load(cu_seqlens + i_n).to(tl.int64)
        eos = tl.load(cu_seqlens + i_n + 1).to(tl.int64)
        c0 = tl.load(chunk_offsets + i_n).to(tl.int64)
    else:
        bos = i_n.to(tl.int64) * T
        eos = bos + T
        c0 = i_n.to(tl.int64) * tl.cdiv(T, BT)
    return bos, eos - bos, c0


@triton.jit
def _chunk_of(cu_seqlens, chunk_indices, i_c, T, BT: tl.constexpr, VARLEN: tl.constexpr):
    """Global chunk i_c -> first token of its sequence, sequence length, first row of the chunk."""
    if VARLEN:
        i_n = tl.load(chunk_indices + i_c * 2).to(tl.int64)
        i_t = tl.load(chunk_indices + i_c * 2 + 1).to(tl.int64)
        bos = tl.load(cu_seqlens + i_n).to(tl.int64)
        seqlen = tl.load(cu_seqlens + i_n + 1).to(tl.int64) - bos
    else:
        nt = tl.cdiv(T, BT)
        i_n = (i_c // nt).to(tl.int64)
        i_t = (i_c % nt).to(tl.int64)
        bos = i_n * T
        seqlen = T
    return bos, seqlen, i_t * BT


@triton.jit
def _load_rows(ptr, bos, row0, seqlen, i_h, H: tl.constexpr, D: tl.constexpr, o_t, o_d):
    """Rows row0 + o_t of one head, [BT, BD]; rows past the sequence and channels past D read 0."""
    rows = row0 + o_t
    mask = (rows < seqlen)[:, None] & (o_d < D)[None, :]
    return tl.load(ptr + ((bos + rows[:, None]) * H + i_h) * D + o_d[None, :], mask=mask, other=0.0)


@triton.jit
def _store_rows(ptr, val, bos, row0, seqlen, i_h, H: tl.constexpr, D: tl.constexpr, o_t, o_d):
    rows = row0 + o_t
    mask = (rows < seqlen)[:, None] & (o_d < D)[None, :]
    tl.store(
        ptr + ((bos + rows[:, None]) * H + i_h) * D + o_d[None, :], val.to(ptr.dtype.element_ty), mask=mask
    )


@triton.jit
def _decays(s, n, o_t):
    """qd [BT], kd [BT] (0 past the chunk's n tokens), M [BT, BT] for decay rate s."""
    qd = tl.exp(-s * (o_t + 1).to(tl.float32))
    dist = (n - 1 - o_t).to(tl.float32)
    kd = tl.where(dist >= 0, tl.exp(-s * tl.maximum(dist, 0.0)), 0.0)
    rel = (o_t[:, None] - o_t[None, :]).to(tl.float32)
    m = tl.where(rel >= 0, tl.exp(-s * tl.maximum(rel, 0.0)), 0.0)
    return qd, kd, m


@triton.jit
def states_fwd(
    k, v, slope, h0, hs, ht, cu_seqlens, chunk_offsets, T,
    H: tl.constexpr, K: tl.constexpr, V: tl.constexpr,
    BT: tl.constexpr, BK: tl.constexpr, BV: tl.constexpr,
    USE_H0: tl.constexpr, VARLEN: tl.constexpr,
):  # fmt: skip
    i_v, i_nh = tl.program_id(0), tl.program_id(1)
    i_n, i_h = i_nh // H, i_nh % H
    bos, seqlen, c0 = _bounds(cu_seqlens, chunk_offsets, i_n, T, BT, VARLEN)
    s = tl.load(slope + i_h).to(tl.float32)
    o_t, o_k, o_v = tl.arange(0, BT), tl.arange(0, BK), i_v * BV + tl.arange(0, BV)
    kv = o_k[:, None] * V + o_v[None, :]  # offsets inside one [K, V] state
    m_kv = (o_k < K)[:, None] & (o_v < V)[None, :]
    state = tl.zeros([BK, BV], dtype=tl.float32)
    if USE_H0:
        state += tl.load(h0 + i_nh.to(tl.int64) * K * V + kv, mask=m_kv, other=0.0)
    for i_t in range(tl.cdiv(seqlen, BT)):
        tl.store(hs + ((c0 + i_t) * H + i_h) * K * V + kv, state, mask=m_kv)
        b_k = _load_rows(k, bos, i_t * BT, seqlen, i_h, H, K, o_t, o_k)  # [BT, BK]
        b_v = _load_rows(v, bos, i_t * BT, seqlen, i_h, H, V, o_t, o_v)
        n = tl.minimum(seqlen - i_t * BT, BT)
        _, kd, _ = _decays(s, n, o_t)
        b_kk = (b_k * kd[:, None]).to(b_v.dtype)
        state = state * tl.exp(-s * n.to(tl.float32)) + tl.dot(tl.trans(b_kk), b_v)
    tl.store(ht + i_nh.to(tl.int64) * K * V + kv, state, mask=m_kv)


@triton.jit
def output_fwd(
    q, k, v, slope, hs, o, cu_seqlens, chunk_indices, T,
    H: tl.constexpr, K: tl.constexpr, V: tl.constexpr,
    BT: tl.constexpr, BK: tl.constexpr, BV: tl.constexpr, VARLEN: tl.constexpr,
):  # fmt: skip
    i_v, i_c, i_h = tl.program_id(0), tl.program_id(1), tl.program_id(2)
    bos, seqlen, row0 = _chunk_of(cu_seqlens, chunk_indices, i_c, T, BT, VARLEN)
    s = tl.load(slope + i_h).to(tl.float32)
    o_t, o_k, o_v = tl.arange(0, BT), tl.arange(0, BK), i_v * BV + tl.arange(0, BV)
    b_q = _load_rows(q, bos, row0, seqlen, i_h, H, K, o_t, o_k)  # [BT, BK]
    b_k = _load_rows(k, bos, row0, seqlen, i_h, H, K, o_t, o_k)
    b_v = _load_rows(v, bos, row0, seqlen, i_h, H, V, o_t, o_v)  # [BT, BV]
    m_kv = (o_k < K)[:, None] & (o_v < V)[None, :]
    b_h = tl.load(
        hs + (i_c.to(tl.int64) * H + i_h) * K * V + o_k[:, None] * V + o_v[None, :], mask=m_kv, other=0.0
    )
    qd, _, m = _decays(s, tl.minimum(seqlen - row0, BT), o_t)
    b_a = tl.dot(b_q, tl.trans(b_k)) * m  # [BT, BT]
    b_o = tl.dot((b_q * qd[:, None]).to(b_q.dtype), b_h.to(b_q.dtype)) + tl.dot(b_a.to(b_v.dtype), b_v)
    _store_rows(o, b_o, bos, row0, seqlen, i_h, H, V, o_t, o_v)


@triton.jit
def dstates_bwd(
    q, do, slope, dht, dhs, dh0, cu_seqlens, chunk_offsets, T,
    H: tl.constexpr, K: tl.constexpr, V: tl.constexpr,
    BT: tl.constexpr, BK: tl.constexpr, BV: tl.constexpr,
    USE_DHT: tl.constexpr, STORE_DH0: tl.constexpr, VARLEN: tl.constexpr,
):  # fmt: skip
    i_v, i_nh = tl.program_id(0), tl.program_id(1)
    i_n, i_h = i_nh // H, i_nh % H
    bos, seqlen, c0 = _bounds(cu_seqlens, chunk_offsets, i_n, T, BT, VARLEN)
    s = tl.load(slope + i_h).to(tl.float32)
    o_t, o_k, o_v = tl.arange(0, BT), tl.arange(0, BK), i_v * BV + tl.arange(0, BV)
    kv = o_k[:, None] * V + o_v[None, :]
    m_kv = (o_k < K)[:, None] & (o_v < V)[None, :]
    grad = tl.zeros([BK, BV], dtype=tl.float32)  # gradient of the state leaving the current chunk
    if USE_DHT:
        grad += tl.load(dht + i_nh.to(tl.int64) * K * V + kv, mask=m_kv, other=0.0)
    nt = tl.cdiv(seqlen, BT)
    for i in range(nt):
        i_t = nt - 1 - i
        tl.store(dhs + ((c0 + i_t) * H + i_h) * K * V + kv, grad, mask=m_kv)
        b_q = _load_rows(q, bos, i_t * BT, seqlen, i_h, H, K, o_t, o_k)  # [BT, BK]
        b_do = _load_rows(do, bos, i_t * BT, seqlen, i_h, H, V, o_t, o_v)  # [BT, BV]
        n = tl.minimum(seqlen - i_t * BT, BT)
        qd, _, _ = _decays(s, n, o_t)
        b_qq = (b_q * qd[:, None]).to(b_do.dtype)
        grad = grad * tl.exp(-s * n.to(tl.float32)) + tl.dot(tl.trans(b_qq), b_do)
    if STORE_DH0:
        tl.store(dh0 + i_nh.to(tl.int64) * K * V + kv, grad, mask=m_kv)


@triton.jit
def dqkv_bwd(
    q, k, v, do, slope, hs, dhs, dq, dk, dv, cu_seqlens, chunk_indices, T,
    H: tl.constexpr, K: tl.constexpr, V: tl.constexpr,
    BT: tl.constexpr, BK: tl.constexpr, BV: tl.constexpr, VARLEN: tl.constexpr,
):  # fmt: skip
    i_c, i_h = tl.program_id(0), tl.program_id(1)
    bos, seqlen, row0 = _chunk_of(cu_seqlens, chunk_indices, i_c, T, BT, VARLEN)
    s = tl.load(slope + i_h).to(tl.float32)
    o_t, o_k, o_v = tl.arange(0, BT), tl.arange(0, BK), tl.arange(0, BV)
    b_q = _load_rows(q, bos, row0, seqlen, i_h, H, K, o_t, o_k)  # [BT, BK]
    b_k = _load_rows(k, bos, row0, seqlen, i_h, H, K, o_t, o_k)
    b_v = _load_rows(v, bos, row0, seqlen, i_h, H, V, o_t, o_v)  # [BT, BV]
    b_do = _load_rows(do, bos, row0, seqlen, i_h, H, V, o_t, o_v)
    state = (i_c.to(tl.int64) * H + i_h) * K * V + o_k[:, None] * V + o_v[None, :]
    m_kv = (o_k < K)[:, None] & (o_v < V)[None, :]
    b_h = tl.load(hs + state, mask=m_kv, other=0.0)  # [BK, BV] state entering the chunk
    b_dh = tl.load(dhs + state, mask=m_kv, other=0.0)  # gradient of the state leaving it
    qd, kd, m = _decays(s, tl.minimum(seqlen - row0, BT), o_t)
    b_a = tl.dot(b_q, tl.trans(b_k)) * m  # [BT, BT]
    b_da = tl.dot(b_do, tl.trans(b_v)) * m
    b_dq = tl.dot(b_da.to(b_k.dtype), b_k) + tl.dot(b_do, tl.trans(b_h).to(b_do.dtype)) * qd[:, None]
    b_dk = tl.dot(tl.trans(b_da).to(b_q.dtype), b_q) + tl.dot(b_v, tl.trans(b_dh).to(b_v.dtype)) * kd[:, None]
    b_kk = (b_k * kd[:, None]).to(b_v.dtype)
    b_dv = tl.dot(tl.trans(b_a).to(b_do.dtype), b_do) + tl.dot(b_kk, b_dh.to(b_v.dtype))
    _store_rows(dq, b_dq, bos, row0, seqlen, i_h, H, K, o_t, o_k)
    _store_rows(dk, b_dk, bos, row0, seqlen, i_h, H, K, o_t, o_k)
    _store_rows(dv, b_dv, bos, row0, seqlen, i_h, H, V, o_t, o_v)


@triton.jit
def decode_step(
    q, k, v, slope, state, o, new_state,
    H: tl.constexpr, K: tl.constexpr, V: tl.constexpr, BK: tl.constexpr, BV: tl.constexpr,
    USE_STATE: tl.constexpr,
):  # fmt: skip
    """S' = exp(-s) S + k^T v, o = q S' for one token of one (sequence, head), one V block."""
    i_v, i_nh = tl.program_id(0), tl.program_id(1)
    i_h = i_nh % H
    o_k, o_v = tl.arange(0, BK), i_v * BV + tl.arange(0, BV)
    m_k, m_v = o_k < K, o_v < V
    base = i_nh.to(tl.int64)
    b_q = tl.load(q + base * K + o_k, mask=m_k, other=0.0).to(tl.float32)
    b_k = tl.load(k + base * K + o_k, mask=m_k, other=0.0).to(tl.float32)
    b_v = tl.load(v + base * V + o_v, mask=m_v, other=0.0).to(tl.float32)
    kv = base * K * V + o_k[:, None] * V + o_v[None, :]
    m_kv = m_k[:, None] & m_v[None, :]
    b_s = b_k[:, None] * b_v[None, :]
    if USE_STATE:
        s = tl.load(slope + i_h).to(tl.float32)
        b_s += tl.exp(-s) * tl.load(state + kv, mask=m_kv, other=0.0)
    tl.store(new_state + kv, b_s, mask=m_kv)
    tl.store(o + base * V + o_v, tl.sum(b_q[:, None] * b_s, axis=0).to(o.dtype.element_ty), mask=m_v)
