"""Rotary position embedding (rotate-half convention, as HF Llama/GPT-OSS/Qwen3-Next/DeepSeek-V3).

Partial rotary: only the first `rotary_dim` channels of each head rotate; the rest pass through.
"""

from __future__ import annotations

import threading
from contextlib import contextmanager

import torch

_shared = threading.local()  # .tables: {key: (cos, sin)} while a model forward runs, else None


@contextmanager
def shared_rope_tables():
    """Within one model forward, layers with the same positions tensor, rotary dim, base and dtype
    share one cos/sin table instead of each recomputing it (8 ops per layer per decode step). Keys
    hold `id(positions)`, which is unique while the forward keeps the tensor alive; the tables are
    dropped when the outermost forward ends, and each thread has its own."""
    outer = getattr(_shared, "tables", None)
    if outer is None:
        _shared.tables = {}
    try:
        yield
    finally:
        if outer is None:
            _shared.tables = None


def rope_cos_sin(
    positions: torch.Tensor, rotary_dim: int, theta: float, dtype: torch.dtype
) -> tuple[torch.Tensor, torch.Tensor]:
    """positions [B, T] -> cos, sin [B, T, rotary_dim], computed in fp32."""
    tables = getattr(_shared, "tables", None)
    if tables is None:
        return _rope_cos_sin(positions, rotary_dim, theta, dtype)
    key = (id(positions), rotary_dim, theta, dtype)
    if key not in tables:
        tables[key] = (positions, _rope_cos_sin(positions, rotary_dim, theta, dtype))
    return tables[key][1]


def _rope_cos_sin(positions, rotary_dim, theta, dtype):
    inv_freq = 1.0 / (
        theta ** (torch.arange(0, rotary_dim, 2, dtype=torch.float32, device=positions.device) / rotary_dim)
    )
    freqs = positions[..., None].float() * inv_freq  # [B, T, rotary_dim/2]
    emb = torch.cat([freqs, freqs], dim=-1)
    return emb.cos().to(dtype), emb.sin().to(dtype)


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat([-x2, x1], dim=-1)


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """x [B, T, H, D]; cos/sin [B, T, R] with R <= D; rotates x[..., :R]."""
    r = cos.shape[-1]
    cos, sin = cos[:, :, None, :], sin[:, :, None, :]  # [B, T, 1, R]
    if r == x.shape[-1]:
        return x * cos + rotate_half(x) * sin
    x_rot, x_pass = x[..., :r], x[..., r:]
    return torch.cat([x_rot * cos + rotate_half(x_rot) * sin, x_pass], dim=-1)
