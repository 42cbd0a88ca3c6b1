"""`sdpa` backend: torch's `F.scaled_dot_product_attention` for the softmax ops (a peer as well as a
backend: on a GPU it is flash/memory-efficient attention, on a CPU torch's fused kernel).

SDPA has no sink argument, so a sink rides along as one extra key: queries get a constant extra
channel 1, real keys a 0 there, and the sink key is (0, ..., 0, sink_h / scale) with a zero value.
Its scaled logit is exactly sink_h and its value adds nothing, which is the GPT-OSS definition.
A per-head sink needs per-head keys, so with sinks the kv heads are expanded to the query heads.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..registry import register_solution
from .ops import SWA, default_scale
from .reference import causal_window_mask


def _with_sink_key(q, k, v, sinks, scale, mask):
    """q [B, H, Tq, D], k/v [B, H, Tk, D*], mask [.., Tq, Tk] -> the same with one sink key appended."""
    b, h, tq, _ = q.shape
    ones = q.new_ones(b, h, tq, 1)
    q = torch.cat([q, ones], dim=-1)
    k = torch.cat([k, k.new_zeros(*k.shape[:-1], 1)], dim=-1)
    sink_key = torch.cat(
        [
            k.new_zeros(b, h, 1, k.shape[-1] - 1),
            (sinks / scale).view(1, h, 1, 1).expand(b, -1, -1, -1).to(k.dtype),
        ],
        -1,
    )
    k = torch.cat([k, sink_key], dim=2)
    v = torch.cat([v, v.new_zeros(b, h, 1, v.shape[-1])], dim=2)
    mask = torch.cat([mask, mask.new_ones(*mask.shape[:-1], 1)], dim=-1)
    return q, k, v, mask


def sdpa_attention(q, k, v, mask, scale, sinks):
    """q [B, H, Tq, D], k/v [B, Hkv, Tk, D*], bool mask broadcastable to [B, H, Tq, Tk]."""
    h, hkv = q.shape[1], k.shape[1]
    if sinks is not None:
        k, v = k.repeat_interleave(h // hkv, dim=1), v.repeat_interleave(h // hkv, dim=1)
        q, k, v, mask = _with_sink_key(q, k, v, sinks, scale, mask)
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=scale, enable_gqa=h != k.shape[1])


def swa_prefill_sdpa(q, k, v, scale=None, window=None, sinks=None):
    """q [B, Tq, H, D] (the last Tq of the Tk keys), k/v [B, Tk, Hkv, D*] -> [B, Tq, H, Dv].

    With a window, queries go in blocks of max(window, 256) that each read only the keys their
    window reaches: O(Tq * window) work instead of a masked O(Tq * Tk) square."""
    tq, tk = q.shape[1], k.shape[1]
    scale = default_scale(scale, q.shape[-1])
    q, k, v = q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)  # [B, H*, T, D*]
    if sinks is None and tq == tk and (window is None or window >= tk):
        # The full causal square: SDPA's own causal path (no [T, T] mask to build and read; ~3 %
        # faster forward+backward at B8 T512 H4 D64 on this CPU). Top-left = bottom-right when Tq = Tk.
        o = F.scaled_dot_product_attention(
            q, k, v, is_causal=True, scale=scale, enable_gqa=q.shape[1] != k.shape[1]
        )
        return o.transpose(1, 2)  # [B, Tq, H, Dv]
    block = tq if window is None else max(window, 256)
    if block >= tq:
        mask = causal_window_mask(tq, tk, tk - tq, 0, window, q.device)  # [Tq, Tk]
        return sdpa_attention(q, k, v, mask, scale, sinks).transpose(1, 2)
    outs = []
    for a in range(0, tq, block):
        b = min(a + block, tq)
        q0 = tk - tq + a  # absolute position of the block's first query
        k0 = max(0, q0 - window + 1)  # the first key any query of the block can see
        mask = causal_window_mask(b - a, q0 + (b - a) - k0, q0, k0, window, q.device)
        outs.append(
            sdpa_attention(
                q[:, :, a:b], k[:, :, k0 : q0 + b - a], v[:, :, k0 : q0 + b - a], mask, scale, sinks
            )
        )
    return torch.cat(outs, dim=2).transpose(1, 2)  # [B, Tq, H, Dv]


_kw = {"language": "pytorch", "target_hardware": ["cpu", "cuda"], "backward": True}
register_solution(
    SWA, "sdpa", swa_prefill_sdpa, description="F.scaled_dot_product_attention, sink as a key", **_kw
)
