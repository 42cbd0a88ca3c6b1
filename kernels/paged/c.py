"""`c` backend of `paged_attn_decode`: paged_attention.c (plain C + OpenMP); fp32, CPU, forward only.

Compiled at first use by `kernels/c_build.py` (unavailable with the reason when gcc or the build
fails). The kernel takes data pointers, sizes and element strides (no torch headers), so the caches
may be strided views of one buffer (MLA's latent cache) as long as their last dim is contiguous.
"""

from __future__ import annotations

import ctypes
import functools
from pathlib import Path

import torch

from ..attention.ops import default_scale
from ..c_build import open_library
from ..registry import register_solution
from .ops import PAGED

SOURCE = Path(__file__).with_name("paged_attention.c")
ERRORS = {  # the kernel's return codes
    1: "a block table entry of a visible page is not a page of the cache",
    2: "a sequence is longer than its block table row holds",
    3: "out of memory for the per-thread buffers",
}


def _declare(lib: ctypes.CDLL) -> None:
    fn = lib.paged_attn_decode_f32
    ptr, i64 = ctypes.c_void_p, ctypes.c_int64
    fn.argtypes = [ptr] * 7 + [i64] * 15 + [ctypes.c_float, ctypes.c_int]
    fn.restype = ctypes.c_int


@functools.cache
def library() -> tuple[ctypes.CDLL | None, str | None]:
    """-> (the loaded library, None), or (None, why not); built once per process."""
    return open_library(SOURCE, _declare)


def available(device: torch.device) -> str | None:
    if device.type != "cpu":
        return "the C kernel runs on the CPU only"
    return library()[1]


def supports(call: dict) -> str | None:
    for name in ("q", "k_cache", "v_cache", "sinks"):
        t = call.get(name)
        if t is not None and t.dtype != torch.float32:
            return f"{name} is {str(t.dtype).removeprefix('torch.')}; the C kernel takes float32 only"
    for name in ("k_cache", "v_cache"):
        if call[name].stride(-1) != 1:
            return f"{name}'s last dim is strided ({call[name].stride(-1)}); the C kernel needs it contiguous"
    for name in ("block_table", "seq_lens"):
        if call[name].is_floating_point() or call[name].is_complex():
            return f"{name} must hold integers"
    return None


def paged_attn_decode_c(q, k_cache, v_cache, block_table, seq_lens, scale=None, sinks=None, window=None):
    lib, reason = library()
    if lib is None:
        raise RuntimeError(reason)
    n, h, d = q.shape
    num_pages, page, hkv, dv = *k_cache.shape[:3], v_cache.shape[-1]
    q = q.contiguous()
    table = block_table.to(torch.int32).contiguous()  # no copy when it already is
    lens = seq_lens.to(torch.int32).contiguous()
    sinks = None if sinks is None else sinks.contiguous()
    o = q.new_empty(n, h, dv)
    status = lib.paged_attn_decode_f32(
        q.data_ptr(), k_cache.data_ptr(), v_cache.data_ptr(), table.data_ptr(), lens.data_ptr(),
        None if sinks is None else sinks.data_ptr(), o.data_ptr(),
        n, h, hkv, d, dv, page, num_pages, table.shape[1], *k_cache.stride()[:3], *v_cache.stride()[:3],
        0 if window is None else window, default_scale(scale, d), torch.get_num_threads(),
    )  # fmt: skip
    if status:
        raise ValueError(f"{PAGED} (backend c): {ERRORS.get(status, f'error {status}')}")
    return o  # [N, H, Dv]


register_solution(
    PAGED,
    "c",
    paged_attn_decode_c,
    language="c",
    target_hardware=["cpu"],
    dependencies=["torch", "gcc (OpenMP)"],
    dtypes=(torch.float32,),
    available=available,
    supports=supports,
    description="C + OpenMP, online softmax through the block table in place",
)
