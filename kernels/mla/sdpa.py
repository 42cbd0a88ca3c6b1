"""`sdpa` backend of `mla_decode`: torch's `F.scaled_dot_product_attention` with one shared
latent key head (MQA over [c_kv | k_pe]); on a GPU it is flash/memory-efficient attention.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..attention.reference import causal_window_mask
from ..registry import register_solution
from .ops import MLA


def mla_decode_sdpa(q_lat, q_pe, c_kv, k_pe, scale):
    tq, s = q_lat.shape[1], c_kv.shape[1]
    q = torch.cat([q_lat, q_pe], dim=-1).transpose(1, 2)  # [B, H, Tq, R+Dr]
    k = torch.cat([c_kv, k_pe], dim=-1)[:, None]  # [B, 1, S, R+Dr]: one shared key head (MQA)
    mask = causal_window_mask(tq, s, s - tq, 0, None, q.device)
    o = F.scaled_dot_product_attention(q, k, c_kv[:, None], attn_mask=mask, scale=scale, enable_gqa=True)
    return o.transpose(1, 2)  # [B, Tq, H, R]


_kw = {"language": "pytorch", "target_hardware": ["cpu", "cuda"], "backward": True}
register_solution(MLA, "sdpa", mla_decode_sdpa, description="SDPA with one shared latent key head", **_kw)
