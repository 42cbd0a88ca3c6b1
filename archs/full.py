"""`full`: softmax attention — MHA/GQA, RoPE (partial allowed), optional QK-norm (Qwen3-Next /
Gemma 3), optional sigmoid output gate (Qwen3-Next: q_proj twice as wide, query and gate per
head), optional per-head sinks (GPT-OSS). `swa.py` reuses it with a window.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from ..kernels import attention_probs, swa_prefill
from .families import register_mixer
from .mixer import Mixer, dtype_bytes
from .norms import RMSNorm
from .rope import apply_rope, rope_cos_sin
from .specs import SoftmaxSpec
from .state import CacheState, KVSpec, KVState, WindowState


@dataclass
class FullSpec(SoftmaxSpec):
    type: str = "full"

    def validate(self, where: str) -> None:
        super().validate(where)
        if self.window is not None:
            raise ValueError(f"{where}.window is set on a 'full' mixer; use type 'swa' for a sliding window")


class SoftmaxAttention(Mixer):
    def __init__(self, spec: SoftmaxSpec, layer_idx, num_layers, hidden_size, output_projection=True):
        super().__init__(spec, layer_idx, num_layers, hidden_size, output_projection)
        h, hkv, d = spec.num_heads, spec.num_kv_heads, spec.head_dim
        self.num_heads, self.num_kv_heads, self.head_dim, self.head_out_dim = h, hkv, d, d
        self.scale = d**-0.5
        # Qwen3-Next layout: per head [query | gate] in one projection.
        self.q_proj = nn.Linear(hidden_size, h * d * (2 if spec.output_gate else 1), bias=spec.bias)
        self.k_proj = nn.Linear(hidden_size, hkv * d, bias=spec.bias)
        self.v_proj = nn.Linear(hidden_size, hkv * d, bias=spec.bias)
        if output_projection:
            self.o_proj = nn.Linear(h * d, hidden_size, bias=spec.bias)
        if spec.qk_norm:
            self.q_norm = RMSNorm(d, spec.rms_norm_eps)
            self.k_norm = RMSNorm(d, spec.rms_norm_eps)
        if spec.sinks:
            self.sinks = nn.Parameter(torch.zeros(h))
        self.init_head_mask()

    # [B, T, D] -> q [B, T, H, Dh] (rotated), gate [B, T, H, Dh] | None, k, v [B, T, Hkv, Dh]
    def project(self, x: torch.Tensor, positions: torch.Tensor):
        b, t, _ = x.shape
        spec = self.spec
        q = self.q_proj(x).view(b, t, self.num_heads, -1)
        gate = None
        if spec.output_gate:
            q, gate = q.chunk(2, dim=-1)
        k = self.k_proj(x).view(b, t, self.num_kv_heads, self.head_dim)
        v = self.v_proj(x).view(b, t, self.num_kv_heads, self.head_dim)
        if spec.qk_norm:
            q, k = self.q_norm(q), self.k_norm(k)
        cos, sin = rope_cos_sin(positions, spec.rotary_dim, spec.rope_theta, q.dtype)
        return self.uniform_queries(apply_rope(q, cos, sin)), gate, apply_rope(k, cos, sin), v

    def head_outputs(self, x, state, positions):
        q, gate, k, v = self.project(x, positions)
        sinks = self.sinks if self.spec.sinks else None
        window = self.spec.window
        if state is None:
            o = swa_prefill(q, k, v, self.scale, window, sinks)
        else:
            o = state.attend(q, k, v, scale=self.scale, window=window, sinks=sinks)
        if gate is not None:
            o = o * torch.sigmoid(gate)
        return o  # [B, T, H, Dh]

    def new_state(self, batch: int, dtype: torch.dtype) -> CacheState:
        return KVState() if self.spec.window is None else WindowState(self.spec.window)

    def cache_spec(self) -> KVSpec:
        return KVSpec(self.num_kv_heads, self.head_dim, self.head_dim, self.spec.window)

    def state_bytes(self, seq_len: int, dtype: torch.dtype, state_dtype="fp32", state_scales="row") -> int:
        kept = seq_len if self.spec.window is None else min(seq_len, self.spec.window - 1)
        return 2 * kept * self.num_kv_heads * self.head_dim * dtype_bytes(dtype)

    def attention_map(self, x, positions=None):
        b, t, _ = x.shape
        if positions is None:
            positions = torch.arange(t, device=x.device).expand(b, t)
        q, _, k, _ = self.project(x, positions)
        sinks = self.sinks if self.spec.sinks else None
        return attention_probs(q, k, 0, 0, self.scale, self.spec.window, sinks)  # [B, H, T, T]


register_mixer("full", FullSpec)(SoftmaxAttention)
