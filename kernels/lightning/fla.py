"""flash-linear-attention adapters for the lightning ops.

MiniMax lightning attention is fla's simple GLA with a constant per-head log-decay and no scale:
`chunk_simple_gla(q, k, v, g_gamma=-slope, scale=1.0)` (fla `fla/ops/simple_gla`). fla's own
`chunk_lightning_attn` is a different decay and is not used.

- `fla`: fla's Triton kernels (chunk for prefill, fused recurrent for decode). They need a GPU.
- `fla_naive`: fla's pure-torch `naive_chunk_simple_gla` / `naive_recurrent_simple_gla`, the CPU
  peers the benchmark compares against. A peer runs only when asked for by name.
"""

from __future__ import annotations

import importlib.util

import torch

from ..registry import register_solution
from .checkpoints import with_checkpoints
from .ops import DECODE, PREFILL

HAVE_FLA = importlib.util.find_spec("fla") is not None


def _gpu_only(device: torch.device) -> str | None:
    if not HAVE_FLA:
        return "flash-linear-attention is not installed (pip install flash-linear-attention)"
    if device.type != "cuda":
        return "fla's Triton kernels need a CUDA device (use fla_naive for fla's CPU code)"
    return None


def _installed(device: torch.device) -> str | None:
    return (
        None if HAVE_FLA else "flash-linear-attention is not installed (pip install flash-linear-attention)"
    )


def _final(state, output_final_state):
    return state.float() if output_final_state and state is not None else None


def prefill_fla(
    q, k, v, slope, initial_state=None, output_final_state=False, cu_seqlens=None, chunk_size=None
):
    from fla.ops.simple_gla import chunk_simple_gla

    o, final = chunk_simple_gla(
        q,
        k,
        v,
        g_gamma=-slope.float(),
        scale=1.0,
        initial_state=initial_state,
        output_final_state=output_final_state,
        cu_seqlens=cu_seqlens,
    )
    return o.to(v.dtype), _final(final, output_final_state)


def decode_fla(q, k, v, slope, state=None):
    from fla.ops.simple_gla import fused_recurrent_simple_gla

    o, new_state = fused_recurrent_simple_gla(
        q[:, None],
        k[:, None],
        v[:, None],
        g_gamma=-slope.float(),
        scale=1.0,
        initial_state=state,
        output_final_state=True,
    )
    return o[:, 0].to(v.dtype), new_state.float()


def prefill_fla_naive(
    q, k, v, slope, initial_state=None, output_final_state=False, cu_seqlens=None, chunk_size=None
):
    from fla.ops.simple_gla.naive import naive_chunk_simple_gla

    g = (-slope.float()).expand(q.shape[0], q.shape[1], -1)  # per-token log-decay [B, T, H]
    o, final = naive_chunk_simple_gla(
        q,
        k,
        v,
        g,
        initial_state=initial_state,
        output_final_state=output_final_state,
        chunk_size=64,
        scale=1.0,
    )
    return o.to(v.dtype), _final(final, output_final_state)


def decode_fla_naive(q, k, v, slope, state=None):
    from fla.ops.simple_gla.naive import naive_recurrent_simple_gla

    g = (-slope.float()).expand(q.shape[0], 1, -1)
    o, new_state = naive_recurrent_simple_gla(
        q[:, None], k[:, None], v[:, None], g, scale=1.0, initial_state=state, output_final_state=True
    )
    return o[:, 0].to(v.dtype), new_state


def _no_packs(call: dict) -> str | None:
    """fla's naive code has no cu_seqlens; with state_checkpoints the segment chaining runs a pack
    as batches of equal-length segments, so those calls it takes."""
    if call.get("cu_seqlens") is not None and call.get("state_checkpoints") is None:
        return "fla's naive code has no cu_seqlens (packed batches) unless state_checkpoints are asked for"
    return None


_fla = {
    "language": "triton",
    "target_hardware": ["cuda"],
    "backward": True,
    "dependencies": ["fla"],
    "available": _gpu_only,
    "dtypes": (torch.float32, torch.bfloat16, torch.float16),
}
# state_checkpoints: both chain their own code over segments (checkpoints.py); the naive code has
# no cu_seqlens, so its rounds run as batches of equal-length segments.
register_solution(
    PREFILL, "fla", with_checkpoints(prefill_fla), description="fla chunk_simple_gla(g_gamma=-slope)", **_fla
)
register_solution(DECODE, "fla", decode_fla, description="fla fused_recurrent_simple_gla", **_fla)
_naive = {
    "language": "pytorch",
    "target_hardware": ["cpu", "cuda"],
    "backward": True,
    "dependencies": ["fla"],
    "available": _installed,
    "peer": True,
    "dtypes": (torch.float32, torch.bfloat16, torch.float16),
}
register_solution(
    PREFILL,
    "fla_naive",
    with_checkpoints(prefill_fla_naive, packs=False),
    description="fla naive_chunk_simple_gla (C=64)",
    supports=_no_packs,
    **_naive,
)
register_solution(
    DECODE, "fla_naive", decode_fla_naive, description="fla naive_recurrent_simple_gla", **_naive
)
