"""Attention ops: definitions with plain-torch references, backends, dispatch (README: `attnlab kernels check`).

One sub-package per op family (lightning/, attention/, paged/, mla/, state/): `ops.py` holds the
definitions and the `torch` reference, `<backend>.py` one backend (the file name is the backend
name: torch_chunk, sdpa, triton, fla, c), `*_kernels.py` raw @triton.jit code. The shared
machinery (definition, registry, dispatch, harness, workloads, report, cli) sits here. Code
outside kernels/ imports the names below only, never a kernels submodule.

Call an op like a function; dispatch picks the backend (`backend="name"` overrides):

    o, final = lightning_prefill(q, k, v, slope, initial_state, output_final_state=True)
"""

# Names load on first use (PEP 562), so commands that only need one part (and `attnlab --help`)
# do not import everything.
from __future__ import annotations

# Absolute, not `..common`: transformers probes for Hugging Face's `kernels` package by importing
# a top-level `kernels` when it finds one, which is this folder when Python runs in the repository
# root. Importing it that way must not fail (it only defines the lazy table).
from attnlab.common import lazy_exports

_LAZY = {
    # the kernel choice (dispatch)
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
    # the ops; each call goes through dispatch to a backend
    "lightning_decode": "lightning.ops",
    "lightning_prefill": "lightning.ops",
    "swa_prefill": "attention.ops",
    "paged_attn_decode": "paged.ops",
    "paged_attn_prefill": "paged.ops",
    "mla_decode": "mla.ops",
    "state_group": "state.ops",
    "state_load": "state.ops",
    "state_store": "state.ops",
    "stored_state_bytes": "state.ops",
    # plain-torch math the mixers and probes share with the references (attention maps, parity)
    "attention_probs": "attention.reference",
    "causal_window_mask": "attention.reference",
    "lightning_chunked": "lightning.reference",
    "lightning_implied_map": "lightning.reference",
    "lightning_recurrent": "lightning.reference",
    # the stored-state formats the serving engine validates and sizes
    "ROUNDINGS": "state.ops",
    "SCALE_GROUPS": "state.ops",
    "STORAGE_DTYPES": "state.ops",
    "scale_shape": "state.ops",
    # ranking one op at one shape without touching the user's cache
    "rank_op": "ranking",
    "ranking_cache": "ranking",
    # benchmark plumbing the other `attnlab bench` subcommands share
    "command_group": "cli",
    "keep_freed_memory": "harness",
}
__all__ = sorted(_LAZY)
__getattr__ = lazy_exports(__name__, _LAZY)
