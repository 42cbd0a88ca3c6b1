"""`triton` backend of `swa_prefill` (forward only): the launcher around `triton_kernels.py`. A call
that needs gradients is dispatched to a backend with a backward.
"""

from __future__ import annotations

from ..registry import register_solution
from ..triton_support import HALF_AND_FULL, TRITON_SOLUTION, next_pow2
from .ops import SWA, default_scale

MAX_HEAD_DIM = 256


def swa_prefill_triton(q, k, v, scale=None, window=None, sinks=None):
    from . import triton_kernels as kern

    b, tq, h, d = q.shape
    tk, hkv, dv = k.shape[1], k.shape[2], v.shape[-1]
    q, k, v = q.contiguous(), k.contiguous(), v.contiguous()
    o = q.new_empty(b, tq, h, dv)
    bm = min(64, next_pow2(tq))
    kern.swa_fwd[(-(-tq // bm), b * h)](
        q, k, v, q if sinks is None else sinks.contiguous(), o, default_scale(scale, d), tq, tk,
        0 if window is None else window,
        H=h, HKV=hkv, D=d, DV=dv, BM=bm, BN=64, BD=next_pow2(d), BDV=next_pow2(dv),
        HAS_WINDOW=window is not None, HAS_SINKS=sinks is not None,
    )  # fmt: skip
    return o


def _swa_fits(call: dict) -> str | None:
    d, dv = call["q"].shape[-1], call["v"].shape[-1]
    return None if max(d, dv) <= MAX_HEAD_DIM else f"head dims {d}, {dv} > {MAX_HEAD_DIM}"


_kw = {**TRITON_SOLUTION, "dtypes": HALF_AND_FULL}
register_solution(
    SWA, "triton", swa_prefill_triton, supports=_swa_fits, description="flash fwd, window + sinks", **_kw
)
