"""The mixer protocol (docs/architecture.md "The mixer protocol") and the base every family shares.

    y, state = mixer(x, state=None, positions=None)   # x [B, T, D]
    mixer.new_state(batch, dtype)
    mixer.state_bytes(seq_len, dtype)
    mixer.cache_spec()                                 # layout of its cache (KVSpec, LatentSpec, ...)
    mixer.attention_map(x)                             # [B, H, T, T]
    mixer.head_mask                                    # [H] per-head multiplier (ablation)
    mixer.head_uniform                                 # [H] bool: make the head's attention uniform

A family implements `head_outputs(x, state, positions) -> o [B, T, H, Dv]` (everything before the output
projection, per head). The base applies `head_mask` and the output projection; an intra-layer
hybrid builds its parts with `output_projection=False` and concatenates their `head_outputs`.
"""

from __future__ import annotations

import torch
from torch import nn

from .state import CacheState


class Mixer(nn.Module):
    mixer_type = "base"
    num_heads: int
    head_out_dim: int  # Dv, the per-head width of `head_outputs()` output

    def __init__(self, spec, layer_idx: int, num_layers: int, hidden_size: int, output_projection: bool):
        super().__init__()
        self.spec = spec
        self.layer_idx = layer_idx
        self.num_layers = num_layers
        self.hidden_size = hidden_size
        self.output_projection = output_projection

    def init_head_mask(self) -> None:
        """Call at the end of a family's __init__, once num_heads is known."""
        self.register_buffer("head_mask", torch.ones(self.num_heads), persistent=False)
        # Wu et al. 2024 ("Retrieval Head Mechanistically Explains Long-Context Factuality") ablation: a flagged head's pre-softmax logits are
        # zeroed (its query is zeroed), so it attends uniformly to every key it may see.
        self.register_buffer("head_uniform", torch.zeros(self.num_heads, dtype=torch.bool), persistent=False)

    def any_uniform_heads(self) -> bool:
        """Whether some head is flagged (decode steps skip the masking ops when none is; under
        torch.compile the ops always run, so there is no data-dependent branch to break on)."""
        return torch.compiler.is_compiling() or bool(self.head_uniform.any())

    def uniform_queries(self, q: torch.Tensor) -> torch.Tensor:
        """q [B, T, H, D] -> q with the rows of `head_uniform` heads zeroed (logits 0: uniform attention)."""
        if not self.any_uniform_heads():
            return q
        # A product with a fresh tensor, so autograd never saves the buffer itself (intra layers
        # rewrite their parts' buffers in place).
        return q * (~self.head_uniform).to(q.dtype)[:, None]

    # --- protocol -------------------------------------------------------------------------
    def forward(
        self,
        x: torch.Tensor,
        state: CacheState | None = None,
        positions: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, CacheState | None]:
        b, t, _ = x.shape
        if positions is None:
            if state is None:
                positions = torch.arange(t, device=x.device).expand(b, t)
            else:
                positions = state.positions(b, t, x.device)
        o = self.masked_output(x, state, positions)  # [B, T, H*Dv]
        if state is not None:
            state.advance(t)
        return (self.o_proj(o) if self.output_projection else o), state

    def masked_output(self, x, state, positions) -> torch.Tensor:
        """head_outputs() times head_mask, flattened: [B, T, H*Dv]."""
        o = self.head_outputs(x, state, positions)  # [B, T, H, Dv]
        return (o * self.head_mask.to(o.dtype)[:, None]).flatten(2)

    def head_outputs(self, x, state, positions) -> torch.Tensor:
        raise NotImplementedError

    def new_state(self, batch: int, dtype: torch.dtype) -> CacheState:
        raise NotImplementedError

    def cache_spec(self):
        """What this layer's cache holds (archs/state.py specs): a serving engine lays out pages or
        slots from it and supplies its own states."""
        raise NotImplementedError

    def state_bytes(
        self, seq_len: int, dtype: torch.dtype, state_dtype: str = "fp32", state_scales: str = "row"
    ) -> int:
        """Exact bytes this layer's cache holds for ONE sequence after `seq_len` tokens. `dtype` is
        the K/V (latent) dtype; `state_dtype`/`state_scales` the storage of a recurrent state
        ("fp32", "bf16", "fp16", "int8" with "row" or "block" scales; kernels/state/ops.py)."""
        raise NotImplementedError

    def attention_map(self, x: torch.Tensor, positions: torch.Tensor | None = None) -> torch.Tensor:
        raise NotImplementedError


def dtype_bytes(dtype: torch.dtype) -> int:
    return torch.empty((), dtype=dtype).element_size()
