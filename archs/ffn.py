"""Per-layer feed-forward blocks: dense SwiGLU, or a top-k mixture of SwiGLU experts.

Both return `(y, aux_loss)`; aux_loss is 0 for the dense block. The MoE auxiliary loss is the
Switch-Transformer load-balancing loss `E * sum_e f_e * P_e` (f_e: fraction of token-slots routed
to expert e, P_e: mean router probability of e), 1.0 at perfect balance.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class SwiGLU(nn.Module):
    def __init__(self, hidden_size: int, intermediate_size: int):
        super().__init__()
        self.gate_proj = nn.Linear(hidden_size, intermediate_size, bias=False)
        self.up_proj = nn.Linear(hidden_size, intermediate_size, bias=False)
        self.down_proj = nn.Linear(intermediate_size, hidden_size, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


class DenseFFN(SwiGLU):
    def forward(self, x):
        return super().forward(x), x.new_zeros(())


class MoEFFN(nn.Module):
    """Top-k router over `num_experts` SwiGLU experts (Mixtral-style: softmax, top-k, renormalise),
    plus an optional always-on shared expert (DeepSeek-style)."""

    def __init__(self, hidden_size: int, intermediate_size: int, num_experts: int, top_k: int, shared: bool):
        super().__init__()
        self.num_experts, self.top_k = num_experts, top_k
        self.router = nn.Linear(hidden_size, num_experts, bias=False)
        self.experts = nn.ModuleList(SwiGLU(hidden_size, intermediate_size) for _ in range(num_experts))
        self.shared_expert = SwiGLU(hidden_size, intermediate_size) if shared else None

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        b, t, d = x.shape
        flat = x.reshape(-1, d)  # [N, D]
        probs = torch.softmax(self.router(flat).float(), dim=-1)  # [N, E]
        weights, chosen = probs.topk(self.top_k, dim=-1)  # [N, k]
        weights = (weights / weights.sum(-1, keepdim=True)).to(x.dtype)
        out = torch.zeros_like(flat)
        for e, expert in enumerate(self.experts):
            token, slot = (chosen == e).nonzero(as_tuple=True)
            if token.numel():
                out.index_add_(0, token, expert(flat[token]) * weights[token, slot, None])
        if self.shared_expert is not None:
            out = out + self.shared_expert(flat)
        routed = F.one_hot(chosen, self.num_experts).sum(1).float()  # [N, E]
        aux = self.num_experts * (routed.mean(0) / self.top_k * probs.mean(0)).sum()
        return out.view(b, t, d), aux


def build_ffn(config) -> nn.Module:
    if config.ffn == "moe":
        return MoEFFN(
            config.hidden_size,
            config.intermediate_size,
            config.num_experts,
            config.num_experts_per_tok,
            config.shared_expert,
        )
    return DenseFFN(config.hidden_size, config.intermediate_size)
