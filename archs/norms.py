"""RMSNorm (computed in fp32, as HF's Llama/MiniMax/DeepSeek norms do)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float = 1e-6):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dtype == torch.float32 and x.device.type == "cpu" and not self._tracks_grad(x):
            # One op instead of eight (inference decode steps are op-bound); on the CPU in fp32
            # torch's rms_norm gives the same bits as the lines below (tests/test_archs_norms.py).
            return F.rms_norm(x, self.weight.shape, self.weight, self.eps)
        dtype = x.dtype
        x32 = x.to(torch.promote_types(dtype, torch.float32))  # at least fp32; keeps fp64 as fp64
        x32 = x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * x32.to(dtype)

    def _tracks_grad(self, x: torch.Tensor) -> bool:
        return torch.is_grad_enabled() and (x.requires_grad or self.weight.requires_grad)
