"""`triton` backend of `paged_attn_decode` (window, sinks, strided caches; forward only): the
launcher around `triton_kernels.py`. A call that needs gradients is dispatched to a backend with a
backward.
"""

from __future__ import annotations

from ..attention.ops import default_scale
from ..registry import register_solution
from ..triton_support import HALF_AND_FULL, TRITON_SOLUTION, next_pow2
from .ops import PAGED

MAX_HEAD_DIM = 256


def paged_attn_decode_triton(q, k_cache, v_cache, block_table, seq_lens, scale=None, sinks=None, window=None):
    from . import triton_kernels as kern

    n, h, d = q.shape
    page, hkv, dv = k_cache.shape[1], k_cache.shape[2], v_cache.shape[-1]
    o = q.new_empty(n, h, dv)
    g = h // hkv
    # The caches go in as they are (strides, no copy): they may be views of one MLA latent buffer.
    kern.paged_decode[(n, hkv)](
        q.contiguous(), k_cache, v_cache, block_table.contiguous(), seq_lens.contiguous(),
        q if sinks is None else sinks.contiguous(), o, default_scale(scale, d), block_table.shape[1],
        0 if window is None else window, *k_cache.stride()[:3], *v_cache.stride()[:3],
        H=h, HKV=hkv, D=d, DV=dv, PAGE=page, G=g, BG=next_pow2(g, 1), BD=next_pow2(d), BDV=next_pow2(dv),
        HAS_SINKS=sinks is not None, HAS_WINDOW=window is not None,
    )  # fmt: skip
    return o


def _paged_fits(call: dict) -> str | None:
    page = call["k_cache"].shape[1]
    if page & (page - 1):
        return f"page size {page} is not a power of two (Triton tiles a page with tl.arange)"
    for name in ("k_cache", "v_cache"):
        if call[name].stride(-1) != 1:
            return f"{name}'s last dim is strided ({call[name].stride(-1)}); the kernel needs it contiguous"
    d, dv = call["q"].shape[-1], call["v_cache"].shape[-1]
    return None if max(d, dv) <= MAX_HEAD_DIM else f"head dims {d}, {dv} > {MAX_HEAD_DIM}"


_kw = {**TRITON_SOLUTION, "dtypes": HALF_AND_FULL}
register_solution(PAGED, "triton", paged_attn_decode_triton, supports=_paged_fits,
                  description="one program per (seq, kv head), window", **_kw)  # fmt: skip
