"""`mla`: DeepSeek-V2/V3 multi-head latent attention (reference: HF `DeepseekV3Attention`).

Keys and values come from one low-rank latent `c_kv` (RMS-normalised), plus one RoPE key `k_pe`
shared by all heads (decoupled RoPE). The cache (`LatentState`) holds only those two,
`kv_lora_rank + qk_rope_head_dim` numbers per token, instead of `2 * H * head_dim`.

Two exact compute paths, equal up to float rounding:
- naive: expand per-head K/V from the latent with `kv_b_proj`, then ordinary attention. Cheaper
  for a multi-token prefill, where every cached token is used by many queries.
- absorbed: fold `W_UK` into the query (`q_lat = q_nope · W_UK`, per head, into latent space) and
  `W_UV` after the attention, so the latent cache is attended directly as one shared
  "key" `[c_kv | k_pe]` and one shared "value" `c_kv`. Nothing per head is built from the cache,
  which is what makes decode cheap.
`path = "auto"` takes the absorbed path for single-token decode with a cache, the naive one
otherwise; set `path` to "naive" or "absorbed" to force one.

Conventions, checked against HF transformers 5.24 `DeepseekV3Attention`:
- weight names/layouts are HF's (q_a_proj, q_a_layernorm, q_b_proj or q_proj, kv_a_proj_with_mqa,
  kv_a_layernorm, kv_b_proj, o_proj), so a state dict copies 1:1. No biases (DeepSeek-V2/V3 set
  `attention_bias=False`).
- per-head query layout is [nope | rope]; `kv_b_proj` output per head is [k_nope | v].
- `rope_interleave=True` (HF's default, DeepSeek's checkpoint layout): the rotary channels come
  in adjacent pairs (x0, x1), (x2, x3), … each rotated by one frequency; the rotated output is laid
  out de-interleaved ([even | odd]), as HF does. `False` is the rotate-half (Llama) convention.
- softmax scale `(qk_nope_head_dim + qk_rope_head_dim) ** -0.5`. YaRN's extra `mscale**2`
  factor is not applied: this family has no RoPE scaling.
- `q_lora_rank = 0` means no query LoRA (HF's `q_lora_rank=None`: one direct `q_proj`). A spec dict
  cannot say `None` for it, because the registry drops `None` values and the default applies.
- `rms_norm_eps` is the eps of `q_a_layernorm` and `kv_a_layernorm`. HF ignores
  `config.rms_norm_eps` there and always uses 1e-6 (so does DeepSeek's own code); 1e-6 is the
  model-wide default here, so the two agree unless a spec changes it.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from ..common import check_bool, check_positive, check_positive_int
from ..kernels import attention_probs, mla_decode, swa_prefill
from .families import register_mixer
from .mixer import Mixer, dtype_bytes
from .norms import RMSNorm
from .rope import apply_rope, rope_cos_sin
from .specs import MixerSpec
from .state import LatentSpec, LatentState

PATHS = ("auto", "naive", "absorbed")


@dataclass
class MlaSpec(MixerSpec):
    """Small defaults for tiny models; DeepSeek-V3 itself uses q_lora_rank 1536, kv_lora_rank 512,
    qk_nope_head_dim 128, qk_rope_head_dim 64, v_head_dim 128, 128 heads."""

    type: str = "mla"
    num_heads: int = 4
    q_lora_rank: int = 64  # 0: no query LoRA, a direct q_proj
    kv_lora_rank: int = 64
    qk_nope_head_dim: int = 32
    qk_rope_head_dim: int = 16
    v_head_dim: int = 32
    rope_theta: float = 10000.0
    rope_interleave: bool = True
    rms_norm_eps: float = 1e-6

    def validate(self, where: str) -> None:
        for name in ("num_heads", "kv_lora_rank", "qk_nope_head_dim", "qk_rope_head_dim", "v_head_dim"):
            check_positive_int(getattr(self, name), f"{where}.{name}")
        q = self.q_lora_rank
        if not isinstance(q, int) or isinstance(q, bool) or q < 0:
            raise ValueError(
                f"{where}.q_lora_rank = {q!r}: must be a positive integer, or 0 for no query LoRA"
            )
        if self.qk_rope_head_dim % 2:
            raise ValueError(f"{where}.qk_rope_head_dim = {self.qk_rope_head_dim}: must be even (RoPE pairs)")
        for name in ("rope_theta", "rms_norm_eps"):
            check_positive(getattr(self, name), f"{where}.{name}")
        check_bool(self.rope_interleave, f"{where}.rope_interleave")


@register_mixer("mla", MlaSpec)
class MultiHeadLatentAttention(Mixer):
    def __init__(self, spec: MlaSpec, layer_idx, num_layers, hidden_size, output_projection=True):
        super().__init__(spec, layer_idx, num_layers, hidden_size, output_projection)
        h = spec.num_heads
        self.num_heads, self.head_out_dim = h, spec.v_head_dim
        self.nope_dim, self.rope_dim = spec.qk_nope_head_dim, spec.qk_rope_head_dim
        self.v_dim, self.latent_dim = spec.v_head_dim, spec.kv_lora_rank
        self.scale = (self.nope_dim + self.rope_dim) ** -0.5
        self.path = "auto"
        q_out = h * (self.nope_dim + self.rope_dim)
        if spec.q_lora_rank:
            self.q_a_proj = nn.Linear(hidden_size, spec.q_lora_rank, bias=False)
            self.q_a_layernorm = RMSNorm(spec.q_lora_rank, spec.rms_norm_eps)
            self.q_b_proj = nn.Linear(spec.q_lora_rank, q_out, bias=False)
        else:
            self.q_proj = nn.Linear(hidden_size, q_out, bias=False)
        self.kv_a_proj_with_mqa = nn.Linear(hidden_size, self.latent_dim + self.rope_dim, bias=False)
        self.kv_a_layernorm = RMSNorm(self.latent_dim, spec.rms_norm_eps)
        self.kv_b_proj = nn.Linear(self.latent_dim, h * (self.nope_dim + self.v_dim), bias=False)
        if output_projection:
            self.o_proj = nn.Linear(h * self.v_dim, hidden_size, bias=False)
        self.init_head_mask()

    def _rope(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        """x [B, T, H, Dr] -> rotated [B, T, H, Dr]."""
        if self.spec.rope_interleave:
            # Pairs (x0, x1), (x2, x3), … share a frequency; moving evens before odds turns this into
            # the rotate-half convention. q and k get the same permutation, so scores are unchanged.
            x = torch.cat([x[..., 0::2], x[..., 1::2]], dim=-1)
        return apply_rope(x, cos, sin)

    def project(self, x: torch.Tensor, positions: torch.Tensor):
        """x [B, T, D] -> q_nope [B, T, H, Dn], q_pe [B, T, H, Dr] (rotated),
        c_kv [B, T, R] (normalised latent), k_pe [B, T, Dr] (rotated, shared by all heads)."""
        b, t, _ = x.shape
        if self.spec.q_lora_rank:
            q = self.q_b_proj(self.q_a_layernorm(self.q_a_proj(x)))
        else:
            q = self.q_proj(x)
        q = q.view(b, t, self.num_heads, self.nope_dim + self.rope_dim)
        q_nope, q_pe = q.split([self.nope_dim, self.rope_dim], dim=-1)
        c_kv, k_pe = self.kv_a_proj_with_mqa(x).split([self.latent_dim, self.rope_dim], dim=-1)
        c_kv = self.kv_a_layernorm(c_kv)  # [B, T, R]
        cos, sin = rope_cos_sin(positions, self.rope_dim, self.spec.rope_theta, x.dtype)
        q_pe = self._rope(q_pe, cos, sin)  # [B, T, H, Dr]
        k_pe = self._rope(k_pe[:, :, None, :], cos, sin)[:, :, 0]  # [B, T, Dr]
        return self.uniform_queries(q_nope), self.uniform_queries(q_pe), c_kv, k_pe

    def expand_kv(self, c_kv: torch.Tensor, k_pe: torch.Tensor):
        """c_kv [B, S, R], k_pe [B, S, Dr] -> per-head k [B, S, H, Dn+Dr], v [B, S, H, Dv]."""
        b, s, _ = c_kv.shape
        kv = self.kv_b_proj(c_kv).view(b, s, self.num_heads, self.nope_dim + self.v_dim)
        k_nope, v = kv.split([self.nope_dim, self.v_dim], dim=-1)
        k = torch.cat([k_nope, k_pe[:, :, None, :].expand(-1, -1, self.num_heads, -1)], dim=-1)
        return k, v

    def _naive(self, q_nope, q_pe, c_all, k_pe_all):
        q = torch.cat([q_nope, q_pe], dim=-1)  # [B, T, H, Dn+Dr]
        k, v = self.expand_kv(c_all, k_pe_all)
        return swa_prefill(q, k, v, self.scale)  # [B, T, H, Dv], causal, no window

    def _latent_weights(self) -> tuple[torch.Tensor, torch.Tensor]:
        w = self.kv_b_proj.weight.view(self.num_heads, self.nope_dim + self.v_dim, self.latent_dim)
        return w.split([self.nope_dim, self.v_dim], dim=1)  # W_UK [H, Dn, R], W_UV [H, Dv, R]

    def absorb(self, q_nope: torch.Tensor) -> torch.Tensor:
        """q_nope [..., H, Dn] -> q_lat [..., H, R] (W_UK folded into the query, per head)."""
        return torch.einsum("...hn,hnr->...hr", q_nope, self._latent_weights()[0])

    def unabsorb(self, o_lat: torch.Tensor) -> torch.Tensor:
        """o_lat [..., H, R] -> o [..., H, Dv] (W_UV applied after the attention, per head)."""
        return torch.einsum("...hr,hvr->...hv", o_lat, self._latent_weights()[1])

    def _absorbed(self, q_nope, q_pe, c_all, k_pe_all):
        o_lat = mla_decode(self.absorb(q_nope), q_pe, c_all, k_pe_all, self.scale)  # [B, T, H, R]
        return self.unabsorb(o_lat)  # [B, T, H, Dv]

    def attend_context(self, q_nope, q_pe, c_all, k_pe_all, cached: bool):
        """Attention of the new queries over a dense latent context [B, S, R], [B, S, Dr] whose
        last T positions are the queries' own (both paths align them so)."""
        if self.path not in PATHS:
            raise ValueError(f"mla path = {self.path!r}; allowed: {', '.join(PATHS)}")
        t = q_nope.shape[1]
        absorbed = self.path == "absorbed" or (self.path == "auto" and cached and t == 1)
        return (self._absorbed if absorbed else self._naive)(q_nope, q_pe, c_all, k_pe_all)

    def head_outputs(self, x, state, positions):
        q_nope, q_pe, c_kv, k_pe = self.project(x, positions)
        if state is None:
            return self.attend_context(q_nope, q_pe, c_kv, k_pe, cached=False)
        return state.attend_latent(q_nope, q_pe, c_kv, k_pe, mla=self)  # [B, T, H, Dv]

    def new_state(self, batch: int, dtype: torch.dtype) -> LatentState:
        return LatentState()

    def cache_spec(self) -> LatentSpec:
        return LatentSpec(self.latent_dim, self.rope_dim)

    def state_bytes(self, seq_len: int, dtype: torch.dtype, state_dtype="fp32", state_scales="row") -> int:
        return seq_len * (self.latent_dim + self.rope_dim) * dtype_bytes(dtype)

    def attention_map(self, x, positions=None):
        b, t, _ = x.shape
        if positions is None:
            positions = torch.arange(t, device=x.device).expand(b, t)
        q_nope, q_pe, c_kv, k_pe = self.project(x, positions)
        k, _ = self.expand_kv(c_kv, k_pe)
        return attention_probs(torch.cat([q_nope, q_pe], dim=-1), k, 0, 0, self.scale)  # [B, H, T, T]
