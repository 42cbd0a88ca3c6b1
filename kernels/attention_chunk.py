"""`torch_chunk` backends of the softmax ops: loop-free batched-matmul forms, fp32 softmax.

- swa_prefill: queries in blocks of Q; block b needs only the keys from its first query's window
  start to its last query, a span of Q + W - 1, cut from the (padded) keys with `unfold` (a view).
  Work is O(T (Q + W)) instead of O(T^2). Without a window (or W >= Tk) it is one [Tq, Tk] block.
- paged_attn_decode: flash-decoding's split over pages: each page a sequence reads (from the one
  holding its window start) is one work item (one gather through the block table, one batched
  matmul), and per-sequence sums combine the pages' exp-scores and values (`index_add`). Work is
  O(sum of visible lengths): no padding to the longest.
- paged_attn_prefill: per sequence, gather its visible pages and run swa_prefill's chunked form.
- mla_decode: the heads fold into the query rows, [B, Tq*H, R] x [B, R, S] (+ the same for the RoPE
  part), so the latent cache is read once per sequence, not once per head (FlashMLA's layout).

Sinks join through the log-sum-exp: p = exp(logit - logaddexp(lse, sink)), no extra column.
GQA groups query heads as [Hkv, G] so a kv head's keys are never copied per query head.
Gradients flow by autograd.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .attention_ops import PAGED, SWA, default_scale
from .mla_ops import MLA
from .paged_cache import first_keys, gather_pages
from .paged_ops import PREFILL, prefill_by_sequence
from .registry import register_solution
from .tensors import compute_dtype

QUERY_BLOCK = 64


def _softmax_sinks(logits: torch.Tensor, sinks: torch.Tensor | None) -> torch.Tensor:
    """Softmax over the last dim, with an optional sink logit per row (broadcast) in the normaliser."""
    if sinks is None:
        return torch.softmax(logits, dim=-1)
    lse = torch.logaddexp(torch.logsumexp(logits, dim=-1, keepdim=True), sinks)
    return torch.exp(logits - lse)


def _causal_dense(q, k, v, scale, sinks):
    """Every key may be visible (no window, or W >= Tk): one [Tq, Tk] block, bottom-right causal."""
    b, tq, h, d = q.shape
    tk, hkv, dv = k.shape[1], k.shape[2], v.shape[-1]
    g, dtype = h // hkv, compute_dtype(q, k, v)
    qg = q.to(dtype).reshape(b, tq, hkv, g, d).permute(0, 2, 3, 1, 4)  # [B, Hkv, G, Tq, D]
    kt = k.to(dtype).permute(0, 2, 3, 1)[:, :, None]  # [B, Hkv, 1, D, Tk]
    logits = torch.matmul(qg, kt) * scale  # [B, Hkv, G, Tq, Tk]
    allowed = torch.arange(tk, device=q.device) <= (tk - tq + torch.arange(tq, device=q.device))[:, None]
    logits = logits.masked_fill(~allowed, float("-inf"))
    sink = None if sinks is None else sinks.to(dtype).view(1, hkv, g, 1, 1)
    o = torch.matmul(
        _softmax_sinks(logits, sink), v.to(dtype).transpose(1, 2)[:, :, None]
    )  # [B, Hkv, G, Tq, Dv]
    return o.permute(0, 3, 1, 2, 4).reshape(b, tq, h, dv).to(q.dtype)


def swa_prefill_chunk(q, k, v, scale=None, window=None, sinks=None):
    b, tq, h, d = q.shape
    tk, hkv, dv = k.shape[1], k.shape[2], v.shape[-1]
    g, dtype, scale = h // hkv, compute_dtype(q, k, v), default_scale(scale, d)
    offset = tk - tq  # position of query 0
    if window is None or window >= tk:
        return _causal_dense(q, k, v, scale, sinks)
    w = window
    qb = min(QUERY_BLOCK, tq)
    nb = -(-tq // qb)
    span = qb + w - 1
    # Keys padded so block j's span starts at index offset + j*qb (position offset + j*qb - w + 1).
    pad_right = max(0, offset + nb * qb + w - 1 - (tk + w - 1))
    kp = F.pad(k.to(dtype), (0, 0, 0, 0, w - 1, pad_right))
    vp = F.pad(v.to(dtype), (0, 0, 0, 0, w - 1, pad_right))
    kb = kp[:, offset:].unfold(1, span, qb)[:, :nb]  # [B, nb, Hkv, D, span]
    vb = vp[:, offset:].unfold(1, span, qb)[:, :nb]  # [B, nb, Hkv, Dv, span]
    qp = F.pad(q.to(dtype), (0, 0, 0, 0, 0, nb * qb - tq))
    qg = qp.view(b, nb, qb, hkv, g, d).permute(0, 1, 3, 4, 2, 5)  # [B, nb, Hkv, G, qb, D]
    logits = torch.matmul(qg, kb[:, :, :, None]) * scale  # [B, nb, Hkv, G, qb, span]
    i = torch.arange(qb, device=q.device)[:, None]
    l = torch.arange(span, device=q.device)[None, :]
    key_pos = offset + torch.arange(nb, device=q.device)[:, None, None] * qb - w + 1 + l  # [nb, 1, span]
    # key l of a block sits W-1-l+i positions before query i: causal needs l <= i+W-1, window l >= i.
    allowed = (l >= i) & (l <= i + w - 1) & (key_pos >= 0) & (key_pos < tk)  # [nb, qb, span]
    # Padding queries (past Tq) may see no key at all; one unmasked column keeps their softmax (and
    # so the backward through the rows we drop) free of nan.
    pad_row = torch.arange(nb, device=q.device)[:, None, None] * qb + i >= tq
    allowed |= pad_row & (l == 0)
    logits = logits.masked_fill(~allowed[None, :, None, None], float("-inf"))
    sink = None if sinks is None else sinks.to(dtype).view(1, 1, hkv, g, 1, 1)
    probs = _softmax_sinks(logits, sink)
    o = torch.matmul(probs, vb[:, :, :, None].transpose(-1, -2))  # [B, nb, Hkv, G, qb, Dv]
    o = o.permute(0, 1, 4, 2, 3, 5).reshape(b, nb * qb, h, dv)[:, :tq]
    return o.to(q.dtype)


def paged_attn_decode_chunk(q, k_cache, v_cache, block_table, seq_lens, scale=None, sinks=None, window=None):
    n, h, d = q.shape
    page, hkv, dv = k_cache.shape[1], k_cache.shape[2], v_cache.shape[-1]
    g, dtype, scale = h // hkv, compute_dtype(q, k_cache, v_cache), default_scale(scale, d)
    lens = seq_lens.long()
    lo = first_keys(lens, window)  # [N] first visible key: earlier pages may be freed (-1)
    first = lo // page
    pages = (lens + page - 1) // page - first  # [N] pages each sequence reads
    seq = torch.repeat_interleave(torch.arange(n, device=q.device), pages)  # [M] owner of each read page
    start = torch.cumsum(pages, 0) - pages
    slot = first[seq] + torch.arange(seq.numel(), device=q.device) - start[seq]  # [M] logical page
    k, v = gather_pages(k_cache, v_cache, block_table.long()[seq, slot])
    k = k.to(dtype).permute(0, 2, 3, 1)  # [M, Hkv, D, page]
    v = v.to(dtype).transpose(1, 2)  # [M, Hkv, page, Dv]
    qg = q.to(dtype).reshape(n, hkv, g, d)[seq]  # [M, Hkv, G, D]
    logits = torch.matmul(qg, k) * scale  # [M, Hkv, G, page]
    pos = slot[:, None] * page + torch.arange(page, device=q.device)  # [M, page]
    valid = (pos < lens[seq][:, None]) & (pos >= lo[seq][:, None])
    logits = logits.masked_fill(~valid[:, None, None], float("-inf"))
    with torch.no_grad():  # a per-sequence shift cancels exactly; it only keeps exp in range
        m = logits.amax(-1)  # [M, Hkv, G]
        shift = torch.full((n, hkv, g), float("-inf"), dtype=dtype, device=q.device)
        shift = shift.scatter_reduce(0, seq[:, None, None].expand_as(m), m, "amax")
        if sinks is not None:
            shift = torch.maximum(shift, sinks.to(dtype).view(1, hkv, g))
    p = torch.exp(logits - shift[seq][..., None])  # [M, Hkv, G, page]
    denom = torch.zeros(n, hkv, g, dtype=dtype, device=q.device).index_add(0, seq, p.sum(-1))
    if sinks is not None:
        denom = denom + torch.exp(sinks.to(dtype).view(1, hkv, g) - shift)
    o = torch.zeros(n, hkv, g, dv, dtype=dtype, device=q.device).index_add(0, seq, torch.matmul(p, v))
    return (o / denom[..., None]).reshape(n, h, dv).to(q.dtype)


def paged_attn_prefill_chunk(
    q, k_cache, v_cache, block_table, cu_seqlens_q, seq_lens, scale=None, sinks=None, window=None
):
    return prefill_by_sequence(
        swa_prefill_chunk, q, k_cache, v_cache, block_table, cu_seqlens_q, seq_lens, scale, sinks, window
    )


def mla_decode_chunk(q_lat, q_pe, c_kv, k_pe, scale):
    b, tq, h, r = q_lat.shape
    s = c_kv.shape[1]
    dtype = compute_dtype(q_lat, c_kv)
    c_kv, k_pe = c_kv.to(dtype), k_pe.to(dtype)
    # Two products summed in one GEMM call; concatenating [c_kv | k_pe] would copy the whole cache.
    rope = torch.bmm(q_pe.to(dtype).reshape(b, tq * h, -1), k_pe.transpose(1, 2))  # [B, Tq*H, S]
    logits = (
        rope.baddbmm_(q_lat.to(dtype).reshape(b, tq * h, r), c_kv.transpose(1, 2)).view(b, tq, h, s) * scale
    )
    allowed = torch.arange(s, device=c_kv.device) <= (s - tq + torch.arange(tq, device=c_kv.device))[:, None]
    logits = logits.masked_fill(~allowed[None, :, None], float("-inf"))
    probs = torch.softmax(logits, dim=-1).view(b, tq * h, s)
    return torch.bmm(probs, c_kv).view(b, tq, h, r).to(q_lat.dtype)


_kw = {"language": "pytorch", "target_hardware": ["cpu", "cuda"], "backward": True}
register_solution(
    SWA, "torch_chunk", swa_prefill_chunk, description="query blocks x key spans (unfold)", **_kw
)
register_solution(
    PAGED, "torch_chunk", paged_attn_decode_chunk, description="one gather, masked softmax", **_kw
)
register_solution(
    PREFILL, "torch_chunk", paged_attn_prefill_chunk, description="per-sequence gather + swa chunks", **_kw
)
register_solution(MLA, "torch_chunk", mla_decode_chunk, description="heads folded into query rows", **_kw)
