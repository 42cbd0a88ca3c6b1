"""`torch_chunk` backend of `swa_prefill`: a loop-free batched-matmul form, fp32 softmax.

Queries go in blocks of Q; block b needs only the keys from its first query's window start to its
last query, a span of Q + W - 1, cut from the (padded) keys with `unfold` (a view). Work is
O(T (Q + W)) instead of O(T^2). Without a window (or W >= Tk) it is one [Tq, Tk] block.

Sinks join through the log-sum-exp: p = exp(logit - logaddexp(lse, sink)), no extra column.
GQA groups query heads as [Hkv, G] so a kv head's keys are never copied per query head.
Gradients flow by autograd.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..registry import register_solution
from ..tensors import compute_dtype
from .ops import SWA, default_scale

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


_kw = {"language": "pytorch", "target_hardware": ["cpu", "cuda"], "backward": True}
register_solution(
    SWA, "torch_chunk", swa_prefill_chunk, description="query blocks x key spans (unfold)", **_kw
)
