"""Attention ops: definitions with plain-torch references, backends, dispatch (DESIGN.md "kernels").

Call an op like a function; dispatch picks the backend (`backend="name"` overrides):

    o, final = lightning_prefill(q, k, v, slope, initial_state, output_final_state=True)
"""

from .attention_ops import paged_attn_decode, swa_prefill
from .lightning_ops import lightning_decode, lightning_prefill
from .mla_ops import mla_decode
from .paged_ops import paged_attn_prefill
from .state_ops import state_group, state_load, state_store, stored_state_bytes

__all__ = [
    "lightning_decode",
    "lightning_prefill",
    "mla_decode",
    "paged_attn_decode",
    "paged_attn_prefill",
    "state_group",
    "state_load",
    "state_store",
    "stored_state_bytes",
    "swa_prefill",
]
