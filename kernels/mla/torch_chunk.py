"""`torch_chunk` backend of `mla_decode`: the heads fold into the query rows, [B, Tq*H, R] x
[B, R, S] (+ the same for the RoPE part), so the latent cache is read once per sequence, not once
per head (FlashMLA's layout). fp32 softmax; gradients flow by autograd.
"""

from __future__ import annotations

import torch

from ..registry import register_solution
from ..tensors import compute_dtype
from .ops import MLA


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
register_solution(MLA, "torch_chunk", mla_decode_chunk, description="heads folded into query rows", **_kw)
