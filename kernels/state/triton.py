"""`triton` backend of `state_store` / `state_load` (kernels: triton_kernels.py).

Checked under TRITON_INTERPRET=1 on CPU like the other Triton kernels; on a GPU it stores the
engine's state slots without a round trip through torch's elementwise ops.
"""

from __future__ import annotations

import torch

from ..registry import register_solution
from ..triton_support import HALF_AND_FULL, TRITON_SOLUTION, next_pow2
from .ops import FLOAT_GRID, LOAD, STORAGE_DTYPES, STORE, scale_shape

BLOCK = 1024


def store_triton(state, dtype, rounding="nearest", group=None, seed=0):
    from . import triton_kernels as kern

    state = state.float().contiguous()
    if dtype == "fp32":
        return state.clone(), None
    values = torch.empty(state.shape, dtype=STORAGE_DTYPES[dtype], device=state.device)
    stochastic, seed = rounding == "stochastic", seed & 0xFFFFFFFF
    if dtype != "int8":
        mantissa, e_min = FLOAT_GRID[dtype]
        limit = torch.finfo(STORAGE_DTYPES[dtype]).max
        grid = (triton.cdiv(state.numel(), BLOCK),)
        kern.store_float[grid](state, values, state.numel(), seed, limit, MANTISSA=mantissa, E_MIN=e_min,
                               STOCHASTIC=stochastic, BF16=dtype == "bf16", BLOCK=BLOCK)  # fmt: skip
        return values, None
    _, _, k, v = state.shape
    gk, gv = group
    scales = torch.empty(scale_shape(state.shape, group), device=state.device)
    kern.store_int8[(scales.numel(),)](state, values, scales, seed, K=k, V=v, GK=gk, GV=gv,
                                       BK=next_pow2(gk, 1), BV=next_pow2(gv, 1), STOCHASTIC=stochastic)  # fmt: skip
    return values, scales


def load_triton(values, scales=None, group=None):
    from . import triton_kernels as kern

    if values.dtype == torch.float32:
        return values.clone()
    values = values.contiguous()
    _, _, k, v = values.shape
    out = torch.empty(values.shape, dtype=torch.float32, device=values.device)
    gk, gv = group or (1, 1)
    scaled = scales is not None
    scales = scales.float().contiguous() if scaled else out  # a placeholder pointer when unscaled
    grid = (triton.cdiv(values.numel(), BLOCK),)
    kern.load_values[grid](values, scales, out, values.numel(), K=k, V=v, GK=gk, GV=gv, SCALED=scaled,
                           BLOCK=BLOCK)  # fmt: skip
    return out


try:
    import triton
except ImportError:  # the backend reports itself unavailable (triton_unavailable)
    triton = None

register_solution(
    STORE, "triton", store_triton, dtypes=(torch.float32,), description="one pass", **TRITON_SOLUTION
)
register_solution(
    LOAD, "triton", load_triton, dtypes=HALF_AND_FULL, description="one pass", **TRITON_SOLUTION
)
