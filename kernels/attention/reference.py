"""Causal softmax attention over absolute positions: GQA, optional sliding window and sinks.

Queries sit at positions q_start .. q_start+Tq-1, keys at k_start .. k_start+Tk-1 (a cache may
hold only a suffix of the past, e.g. a sliding window). Query i sees key j when
j <= i and, with a window W, i - j < W (GPT-OSS / Mistral convention: W keys including itself).

Sinks (GPT-OSS): one learned logit per head appended as an extra column; the softmax runs over
keys + sink and the sink column is dropped, so it absorbs mass and contributes no value.

These are the plain-torch pieces of the `swa_prefill` reference (ops.py) and of the
attention maps the probes read; the ops themselves run through dispatch.
"""

from __future__ import annotations

import torch


def causal_window_mask(
    tq: int, tk: int, q_start: int, k_start: int, window: int | None, device
) -> torch.Tensor:
    """-> bool [Tq, Tk], True where the query may attend to the key."""
    q_pos = torch.arange(q_start, q_start + tq, device=device)[:, None]
    k_pos = torch.arange(k_start, k_start + tk, device=device)[None, :]
    allowed = k_pos <= q_pos
    if window is not None:
        allowed &= (q_pos - k_pos) < window
    return allowed


def attention_probs(
    q: torch.Tensor,
    k: torch.Tensor,
    q_start: int,
    k_start: int,
    scale: float,
    window: int | None = None,
    sinks: torch.Tensor | None = None,
) -> torch.Tensor:
    """q [B, Tq, H, D], k [B, Tk, Hkv, D] -> probabilities [B, H, Tq, Tk] (rows sum to < 1 with sinks)."""
    h, hkv = q.shape[2], k.shape[2]
    k = k.repeat_interleave(h // hkv, dim=2)
    logits = torch.einsum("bqhd,bkhd->bhqk", q, k) * scale
    allowed = causal_window_mask(q.shape[1], k.shape[1], q_start, k_start, window, q.device)
    logits = logits.masked_fill(~allowed, float("-inf"))
    # Softmax in at least fp32: `.float()` would also demote fp64 (gradcheck runs in fp64).
    acc = torch.promote_types(logits.dtype, torch.float32)
    if sinks is None:
        return torch.softmax(logits.to(acc), dim=-1).to(q.dtype)
    sink_col = sinks.reshape(1, -1, 1, 1).to(logits.dtype).expand(logits.shape[0], -1, logits.shape[2], 1)
    combined = torch.cat([logits, sink_col], dim=-1)
    return torch.softmax(combined.to(acc), dim=-1)[..., :-1].to(q.dtype)
