"""`torch_chunk` backends of the paged ops: loop-free batched-matmul forms, fp32 softmax.

- paged_attn_decode: flash-decoding's split over pages: each page a sequence reads (from the one
  holding its window start) is one work item (one gather through the block table, one batched
  matmul), and per-sequence sums combine the pages' exp-scores and values (`index_add`). Work is
  O(sum of visible lengths): no padding to the longest.
- paged_attn_prefill: per sequence, gather its visible pages and run swa_prefill's chunked form.

Sinks join the per-sequence normaliser; GQA groups query heads as [Hkv, G]. Gradients flow by
autograd.
"""

from __future__ import annotations

import torch

from ..attention.ops import default_scale
from ..attention.torch_chunk import swa_prefill_chunk
from ..registry import register_solution
from ..tensors import compute_dtype
from .cache import first_keys, gather_pages
from .ops import PAGED, PREFILL, prefill_by_sequence


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


_kw = {"language": "pytorch", "target_hardware": ["cpu", "cuda"], "backward": True}
register_solution(
    PAGED, "torch_chunk", paged_attn_decode_chunk, description="one gather, masked softmax", **_kw
)
register_solution(
    PREFILL, "torch_chunk", paged_attn_prefill_chunk, description="per-sequence gather + swa chunks", **_kw
)
