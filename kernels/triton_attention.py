"""`triton` backend of `swa_prefill` (forward) and `paged_attn_decode` (window, sinks, strided
caches): launchers around `triton_attention_kernels.py`. Both are forward-only; a call that needs
gradients is dispatched to a backend with a backward.
"""

from __future__ import annotations

import torch

from .attention_ops import PAGED, SWA, default_scale
from .registry import register_solution
from .triton_lightning import _pow2, triton_unavailable

MAX_HEAD_DIM = 256


def swa_prefill_triton(q, k, v, scale=None, window=None, sinks=None):
    from . import triton_attention_kernels as kern

    b, tq, h, d = q.shape
    tk, hkv, dv = k.shape[1], k.shape[2], v.shape[-1]
    q, k, v = q.contiguous(), k.contiguous(), v.contiguous()
    o = q.new_empty(b, tq, h, dv)
    bm = min(64, _pow2(tq))
    kern.swa_fwd[(-(-tq // bm), b * h)](
        q, k, v, q if sinks is None else sinks.contiguous(), o, default_scale(scale, d), tq, tk,
        0 if window is None else window,
        H=h, HKV=hkv, D=d, DV=dv, BM=bm, BN=64, BD=_pow2(d), BDV=_pow2(dv),
        HAS_WINDOW=window is not None, HAS_SINKS=sinks is not None,
    )  # fmt: skip
    return o


def paged_attn_decode_triton(q, k_cache, v_cache, block_table, seq_lens, scale=None, sinks=None, window=None):
    from . import triton_attention_kernels as kern

    n, h, d = q.shape
    page, hkv, dv = k_cache.shape[1], k_cache.shape[2], v_cache.shape[-1]
    o = q.new_empty(n, h, dv)
    g = h // hkv
    # The caches go in as they are (strides, no copy): they may be views of one MLA latent buffer.
    kern.paged_decode[(n, hkv)](
        q.contiguous(), k_cache, v_cache, block_table.contiguous(), seq_lens.contiguous(),
        q if sinks is None else sinks.contiguous(), o, default_scale(scale, d), block_table.shape[1],
        0 if window is None else window, *k_cache.stride()[:3], *v_cache.stride()[:3],
        H=h, HKV=hkv, D=d, DV=dv, PAGE=page, G=g, BG=_pow2(g, 1), BD=_pow2(d), BDV=_pow2(dv),
        HAS_SINKS=sinks is not None, HAS_WINDOW=window is not None,
    )  # fmt: skip
    return o


def _swa_fits(call: dict) -> str | None:
    d, dv = call["q"].shape[-1], call["v"].shape[-1]
    return None if max(d, dv) <= MAX_HEAD_DIM else f"head dims {d}, {dv} > {MAX_HEAD_DIM}"


def _paged_fits(call: dict) -> str | None:
    page = call["k_cache"].shape[1]
    if page & (page - 1):
        return f"page size {page} is not a power of two (Triton tiles a page with tl.arange)"
    for name in ("k_cache", "v_cache"):
        if call[name].stride(-1) != 1:
            return f"{name}'s last dim is strided ({call[name].stride(-1)}); the kernel needs it contiguous"
    d, dv = call["q"].shape[-1], call["v_cache"].shape[-1]
    return None if max(d, dv) <= MAX_HEAD_DIM else f"head dims {d}, {dv} > {MAX_HEAD_DIM}"


_kw = {
    "language": "triton",
    "target_hardware": ["cuda"],
    "dependencies": ["torch", "triton"],
    "available": triton_unavailable,
    "dtypes": (torch.float32, torch.bfloat16, torch.float16),
}
register_solution(
    SWA, "triton", swa_prefill_triton, supports=_swa_fits, description="flash fwd, window + sinks", **_kw
)
register_solution(PAGED, "triton", paged_attn_decode_triton, supports=_paged_fits,
                  description="one program per (seq, kv head), window", **_kw)  # fmt: skip
