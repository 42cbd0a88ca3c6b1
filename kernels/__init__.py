"""Attention ops: definitions with plain-torch references, backends, dispatch (README: `attnlab kernels check`).

Call an op like a function; dispatch picks the backend (`backend="name"` overrides):

    o, final = lightning_prefill(q, k, v, slope, initial_state, output_final_state=True)
"""

# Names load on first use (PEP 562), so commands that only need one part (and `attnlab --help`)
# do not import everything.
from __future__ import annotations

import importlib

__all__ = [
    "KernelChoice",
    "add_kernels_option",
    "backends_used",
    "current_choice",
    "describe_kernels",
    "kernel_choice",
    "kernel_choice_arg",
    "kernel_record",
    "parse_kernel_choice",
    "use_kernels",
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

_LAZY = {
    "KernelChoice": "dispatch",
    "add_kernels_option": "cli_options",
    "backends_used": "dispatch",
    "current_choice": "dispatch",
    "describe_kernels": "dispatch",
    "kernel_choice": "dispatch",
    "kernel_choice_arg": "dispatch",
    "kernel_record": "dispatch",
    "parse_kernel_choice": "dispatch",
    "use_kernels": "dispatch",
    "paged_attn_decode": "attention_ops",
    "swa_prefill": "attention_ops",
    "lightning_decode": "lightning_ops",
    "lightning_prefill": "lightning_ops",
    "mla_decode": "mla_ops",
    "paged_attn_prefill": "paged_ops",
    "state_group": "state_ops",
    "state_load": "state_ops",
    "state_store": "state_ops",
    "stored_state_bytes": "state_ops",
}


def __getattr__(name: str):
    if name in _LAZY:
        value = getattr(importlib.import_module(f"{__name__}.{_LAZY[name]}"), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
