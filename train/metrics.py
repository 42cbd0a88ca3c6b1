"""Model-level numbers reported for every run: parameters, cache bytes, FLOPs per token, and
answer-token accuracy."""

from __future__ import annotations

import torch
from torch import nn


def parameter_counts(model) -> dict[str, int]:
    total = sum(p.numel() for p in model.parameters())
    embed = model.get_input_embeddings().weight.numel()
    return {"params": total, "params_non_embedding": total - embed}


def answer_accuracy(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Fraction of labelled positions whose argmax prediction is right (labels aligned with inputs:
    position t-1 predicts labels[t]). For text every position is labelled: next-token accuracy."""
    target = labels[:, 1:]  # [B, T-1]
    mask = target != -100
    hits = (logits[:, :-1].argmax(-1) == target) & mask
    return hits.sum() / mask.sum().clamp_min(1)


def mixing_flops(mixer, seq_len: int) -> float:
    """Forward FLOPs per token of the token-mixing itself (the projections are counted as matmul
    parameters), averaged over positions 0..seq_len-1 of a causal sequence."""
    kind, spec = mixer.mixer_type, mixer.spec
    if kind == "intra":
        return sum(mixing_flops(part, seq_len) for part in mixer.parts)
    if kind == "lightning":
        # Recurrent view: S += k^T v and o = q S, each 2·Dh·Dh per head (independent of T).
        return 4.0 * mixer.num_heads * mixer.head_dim * mixer.head_dim
    if kind in ("full", "swa", "mla"):
        window = getattr(spec, "window", None) or seq_len
        keys = sum(min(t + 1, window) for t in range(seq_len)) / seq_len  # mean keys attended
        if kind == "mla":
            d_qk, d_v = spec.qk_nope_head_dim + spec.qk_rope_head_dim, spec.v_head_dim
        else:
            d_qk = d_v = mixer.head_dim
        return 2.0 * mixer.num_heads * (d_qk + d_v) * keys
    return 0.0  # a family not listed here: its projections are still counted


def flops_per_token(model, seq_len: int) -> float:
    """Training FLOPs per token ≈ 3 × forward (backward ≈ 2 × forward); forward = 2 × matmul
    weights (every Linear, lm_head included; embeddings are lookups) + the mixing term."""
    matmul = sum(m.weight.numel() for m in model.modules() if isinstance(m, nn.Linear))
    mixing = sum(mixing_flops(m, seq_len) for m in model.mixers())
    return 3.0 * (2.0 * matmul + mixing)
