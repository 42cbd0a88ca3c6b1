"""`intra`: intra-layer hybrid — the heads of one layer split among sub-mixers (e.g. 2 SWA + 2 full
heads, or lightning + full heads). Each part computes its heads from the same input; the outputs
are concatenated and share one output projection. Its cache is the union of the parts' caches.

    {"type": "intra", "parts": [{"type": "swa", "heads": 2, "window": 64}, {"type": "full", "heads": 2}]}

Without `parts`, the layer's heads are split in half: sliding window (default window) + full.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
from torch import nn

from ..common import check_positive_int
from .families import build_mixer, register_mixer, resolve_spec
from .mixer import Mixer
from .specs import MixerSpec
from .state import CompositeSpec, CompositeState


@dataclass
class IntraSpec(MixerSpec):
    type: str = "intra"
    parts: list | None = None
    # Model-wide defaults the parts inherit (filled by the config).
    num_heads: int = 4
    num_kv_heads: int | None = None
    head_dim: int = 32
    rope_theta: float = 10000.0
    rms_norm_eps: float = 1e-6

    def validate(self, where: str) -> None:
        check_positive_int(self.num_heads, f"{where}.num_heads")
        kv = self.num_kv_heads or self.num_heads
        parts = self.parts
        if parts is None:
            if self.num_heads < 2:
                raise ValueError(f"{where}.parts: the default swa+full split needs num_heads >= 2")
            half = self.num_heads // 2
            parts = [{"type": "swa", "heads": half}, {"type": "full", "heads": self.num_heads - half}]
        if not isinstance(parts, list) or len(parts) < 2:
            raise ValueError(
                f"{where}.parts must be a list of at least two sub-mixer specs, each with 'heads'"
            )
        self.resolved_parts = []
        for i, part in enumerate(parts):
            at = f"{where}.parts[{i}]"
            if not isinstance(part, dict) or "heads" not in part:
                raise ValueError(f"{at} must be a dict with 'type' and 'heads' (its number of heads)")
            part = copy.deepcopy(part)
            heads = part.pop("heads")
            check_positive_int(heads, f"{at}.heads")
            if part.get("type") == "intra":
                raise ValueError(f"{at}.type = 'intra': parts cannot nest; allowed: any other mixer type")
            # Keep the model's query/kv ratio inside each part where it divides, else plain MHA.
            ratio = self.num_heads // kv
            defaults = {
                "num_heads": heads,
                "num_kv_heads": heads // ratio if heads % ratio == 0 else heads,
                "head_dim": self.head_dim,
                "rope_theta": self.rope_theta,
                "rms_norm_eps": self.rms_norm_eps,
            }
            self.resolved_parts.append(resolve_spec(part, defaults, at))
        self.num_heads = sum(p.num_heads for p in self.resolved_parts)


@register_mixer("intra", IntraSpec)
class IntraLayerHybrid(Mixer):
    def __init__(self, spec: IntraSpec, layer_idx, num_layers, hidden_size, output_projection=True):
        super().__init__(spec, layer_idx, num_layers, hidden_size, output_projection)
        self.parts = nn.ModuleList(
            build_mixer(p, layer_idx, num_layers, hidden_size, output_projection=False)
            for p in spec.resolved_parts
        )
        self.num_heads = sum(p.num_heads for p in self.parts)
        width = sum(p.num_heads * p.head_out_dim for p in self.parts)
        if output_projection:
            self.o_proj = nn.Linear(width, hidden_size, bias=False)
        self.init_head_mask()

    def share_head_uniform(self) -> None:
        """The layer's `head_uniform` is the one set from outside; each part's head_outputs() reads its slice."""
        first = 0
        for part in self.parts:
            part.head_uniform.copy_(self.head_uniform[first : first + part.num_heads])
            first += part.num_heads

    def masked_output(self, x, state, positions):
        self.share_head_uniform()
        outs, first = [], 0
        for i, part in enumerate(self.parts):
            o = part.head_outputs(
                x, None if state is None else state.parts[i], positions
            )  # [B, T, h_i, Dv_i]
            mask = self.head_mask[first : first + part.num_heads].to(o.dtype)
            outs.append((o * mask[:, None]).flatten(2))
            first += part.num_heads
        return torch.cat(outs, dim=-1)  # [B, T, sum h_i * Dv_i]

    def new_state(self, batch, dtype):
        return CompositeState([p.new_state(batch, dtype) for p in self.parts])

    def cache_spec(self) -> CompositeSpec:
        return CompositeSpec(tuple(p.cache_spec() for p in self.parts))

    def state_bytes(self, seq_len, dtype, state_dtype="fp32", state_scales="row"):
        return sum(p.state_bytes(seq_len, dtype, state_dtype, state_scales) for p in self.parts)

    def attention_map(self, x, positions=None):
        self.share_head_uniform()
        return torch.cat([p.attention_map(x, positions) for p in self.parts], dim=1)  # [B, H, T, T]
