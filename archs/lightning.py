"""`lightning`: MiniMax-01 lightning attention, exact (MiniMax-01, arXiv 2501.08313;
HF `MiniMaxLightningAttention`).

    q, k, v = SiLU(qkv_proj(x))                 per head [q | k | v], no 1/sqrt(D) scale
    o       = linear attention with per-head decay exp(-s_h)   (kernels/lightning/reference.py)
    y       = o_proj(sigmoid(output_gate(x)) * RMSNorm_{H*D}(o))

Parameter names and shapes equal HF's, except HF's `out_proj` is our `o_proj` (the base class
owns the projection), so weights copy 1:1. The norm and the gate belong to `head_outputs()`, so an
intra-layer hybrid gets them per part and only the projection is shared.

The cache is one fp32 state [B, H, D, D] per layer (`RecurrentState`), whatever the sequence
length. Prefill and chunked prefill run the block form from that state; a single decode token
runs the recurrent form. Note: HF's lightning norm ignores `config.rms_norm_eps` (it is built
with the default 1e-6 while MiniMaxConfig's default is 1e-5); set `rms_norm_eps=1e-6` here to
match a MiniMax checkpoint.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..common import check_positive, check_positive_int
from ..kernels import lightning_implied_map, lightning_prefill, stored_state_bytes
from .families import register_mixer
from .mixer import Mixer, dtype_bytes
from .norms import RMSNorm
from .specs import MixerSpec
from .state import CacheState, RecurrentSpec, RecurrentState


@dataclass
class LightningSpec(MixerSpec):
    type: str = "lightning"
    num_heads: int = 4
    head_dim: int = 32
    block_size: int = 256  # prefill block length; changes speed, not results
    rms_norm_eps: float = 1e-6

    def validate(self, where: str) -> None:
        for name in ("num_heads", "head_dim", "block_size"):
            check_positive_int(getattr(self, name), f"{where}.{name}")
        check_positive(self.rms_norm_eps, f"{where}.rms_norm_eps")


def minimax_slopes(num_heads: int, layer_idx: int, num_layers: int, device=None) -> torch.Tensor:
    """Per-head decay rates s_h [H] (fp32), computed exactly as HF's `get_slope_rate`.

    s_h = (2^(-8/H))^(h+1) * (1 - l/(L-1+1e-5) + 1e-5): ALiBi-style geometric rates, shrunk
    linearly with depth so the last layer barely decays (its factor is ~1e-5).
    """
    base = 1 / (2 ** (8 / num_heads))
    exponent = torch.arange(num_heads, device=device) + 1
    factor = 1 - layer_idx / (num_layers - 1 + 1e-5) + 1e-5
    return (base**exponent) * factor


@register_mixer("lightning", LightningSpec)
class LightningAttention(Mixer):
    def __init__(self, spec: LightningSpec, layer_idx, num_layers, hidden_size, output_projection=True):
        super().__init__(spec, layer_idx, num_layers, hidden_size, output_projection)
        h, d = spec.num_heads, spec.head_dim
        self.num_heads, self.head_dim, self.head_out_dim = h, d, d
        self.qkv_proj = nn.Linear(hidden_size, 3 * h * d, bias=False)
        self.output_gate = nn.Linear(hidden_size, h * d, bias=False)
        self.norm = RMSNorm(h * d, spec.rms_norm_eps)
        if output_projection:
            self.o_proj = nn.Linear(h * d, hidden_size, bias=False)
        self.init_head_mask()

    def slope(self, device) -> torch.Tensor:
        # A plain fp32 tensor per device, not a buffer: `model.to(bfloat16)` would round a buffer,
        # and a rate off by 0.4% compounds into exp(-s t) errors that grow with t.
        cache = self.__dict__.setdefault("_slopes", {})
        if device not in cache:
            cache[device] = minimax_slopes(self.num_heads, self.layer_idx, self.num_layers, device)
        return cache[device]

    def project(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """x [B, T, D] -> q, k, v [B, T, H, Dh]."""
        b, t, _ = x.shape
        qkv = F.silu(self.qkv_proj(x)).view(b, t, self.num_heads, 3 * self.head_dim)
        q, k, v = qkv.split(self.head_dim, dim=-1)
        return (*self.uniform_qk(q, k), v)

    def uniform_qk(self, q: torch.Tensor, k: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Lightning's analogue of uniform masking (a linear head has no softmax to flatten): for
        `head_uniform` heads q = k = e_0, so q·k := 1, the implied map is exp(-s (i-j)) and the head
        outputs the decay-weighted sum of values. Exact for tokens processed while the flag is set; a
        recurrent state filled before it holds only sum(decay k^T v), which the query e_0 reads with
        each past value weighted by its key's first channel instead of by 1.
        """
        if not self.any_uniform_heads():
            return q, k
        unit = torch.zeros(q.shape[-1], dtype=q.dtype, device=q.device)
        unit[0] = 1.0
        flag = self.head_uniform.to(q.dtype)[:, None]  # [H, 1], broadcasts over [B, T, H, D]
        return q * (1 - flag) + unit * flag, k * (1 - flag) + unit * flag

    def head_outputs(self, x, state, positions):
        b, t, _ = x.shape
        q, k, v = self.project(x)  # [B, T, H, Dh]
        slope = self.slope(x.device)
        if state is None:
            o, _ = lightning_prefill(q, k, v, slope, chunk_size=self.spec.block_size)
        else:
            o = state.attend_linear(q, k, v, slope=slope, chunk_size=self.spec.block_size)
        o = self.norm(o.reshape(b, t, -1))  # [B, T, H*Dh], one RMS over all heads (as HF)
        o = torch.sigmoid(self.output_gate(x)) * o
        return o.view(b, t, self.num_heads, self.head_dim)  # [B, T, H, Dh]

    def new_state(self, batch: int, dtype: torch.dtype) -> CacheState:
        return RecurrentState()

    def cache_spec(self) -> RecurrentSpec:
        return RecurrentSpec(self.num_heads, self.head_dim, self.head_dim)

    def state_bytes(self, seq_len: int, dtype: torch.dtype, state_dtype="fp32", state_scales="row") -> int:
        if seq_len == 0:
            return 0  # nothing is allocated before the first token
        h, d = self.num_heads, self.head_dim
        if state_dtype != "fp32":  # the serving engine's storage (docs/state_precision.md)
            return stored_state_bytes(h, d, d, state_dtype, state_scales)
        # fp32 whatever the model dtype (float64 models keep float64): see kernels/lightning/reference.py.
        return h * d * d * max(4, dtype_bytes(dtype))

    def attention_map(self, x, positions=None):
        q, k, _ = self.project(x)
        return lightning_implied_map(q, k, self.slope(x.device))  # [B, H, T, T], unnormalised, signed
