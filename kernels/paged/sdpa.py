"""`sdpa` backend of the paged ops: gather the visible pages, then torch's
`F.scaled_dot_product_attention` (sinks as one extra key, `attention/sdpa.py`).
"""

from __future__ import annotations

import torch

from ..attention.ops import default_scale
from ..attention.sdpa import sdpa_attention, swa_prefill_sdpa
from ..registry import register_solution
from .cache import first_keys, gather_pages
from .ops import PAGED, PREFILL, prefill_by_sequence


def paged_attn_decode_sdpa(q, k_cache, v_cache, block_table, seq_lens, scale=None, sinks=None, window=None):
    n, page = q.shape[0], k_cache.shape[1]
    lens = seq_lens.long()
    lo = first_keys(lens, window)  # [N] first visible key
    own_lo, own_hi = lo // page, (lens + page - 1) // page  # [N] the logical pages each sequence reads
    # One rectangle of table columns: from the earliest window start to the longest sequence's end.
    first, end = int(own_lo.min()), int(own_hi.max())
    cols = torch.arange(first, end, device=q.device)
    own = (cols >= own_lo[:, None]) & (cols < own_hi[:, None])  # [N, C]
    # Entries outside a sequence's own pages may be -1 (freed) or padding: read its first visible
    # page there instead (written data, masked out below), never another sequence's or a free page.
    fill = block_table.long().gather(1, own_lo[:, None])  # [N, 1]
    table = torch.where(own, block_table[:, first:end].long(), fill)  # [N, C]
    k, v = gather_pages(k_cache, v_cache, table.flatten())  # [N * C, page, Hkv, D*]
    k = k.reshape(n, -1, *k.shape[2:]).transpose(1, 2)  # [N, Hkv, S, D]
    v = v.reshape(n, -1, *v.shape[2:]).transpose(1, 2)  # [N, Hkv, S, Dv]
    pos = first * page + torch.arange(k.shape[2], device=q.device)  # [S]
    mask = (pos < lens[:, None]) & (pos >= lo[:, None])  # [N, S]
    o = sdpa_attention(q[:, :, None], k, v, mask[:, None, None], default_scale(scale, q.shape[-1]), sinks)
    return o[:, :, 0]  # [N, H, Dv]


def paged_attn_prefill_sdpa(
    q, k_cache, v_cache, block_table, cu_seqlens_q, seq_lens, scale=None, sinks=None, window=None
):
    return prefill_by_sequence(
        swa_prefill_sdpa, q, k_cache, v_cache, block_table, cu_seqlens_q, seq_lens, scale, sinks, window
    )


_kw = {"language": "pytorch", "target_hardware": ["cpu", "cuda"], "backward": True}
register_solution(PAGED, "sdpa", paged_attn_decode_sdpa, description="gather pages, then SDPA", **_kw)
register_solution(
    PREFILL, "sdpa", paged_attn_prefill_sdpa, description="per-sequence gather, then SDPA", **_kw
)
