"""`c` backend of `state_store` / `state_load`: state_codec.c (plain C + OpenMP), CPU only.

Built and loaded by `kernels/c_build.py`, like the paged decode kernel (compiled at first use,
cached per source, compiler and CPU; unavailable with the reason when gcc or the build fails).
One pass over memory where the torch reference makes several (abs, amax, divide, floor, clamp,
cast), and bit-for-bit equal to it.
"""

from __future__ import annotations

import ctypes
import functools
from pathlib import Path

import torch

from ..c_build import open_library
from ..registry import register_solution
from .ops import LOAD, STORAGE_DTYPES, STORE, scale_shape

SOURCE = Path(__file__).with_name("state_codec.c")
CODES = {"bf16": 1, "fp16": 2, "int8": 3}
CODE_OF_DTYPE = {torch.bfloat16: 1, torch.float16: 2, torch.int8: 3}


def _declare(lib: ctypes.CDLL) -> None:
    ptr, i64, i32 = ctypes.c_void_p, ctypes.c_int64, ctypes.c_int
    lib.state_store_f32.argtypes = [ptr] * 3 + [i64] * 6 + [i32, i32, ctypes.c_uint32, i32]
    lib.state_load_f32.argtypes = [ptr] * 3 + [i64] * 6 + [i32, i32]
    lib.state_store_f32.restype = lib.state_load_f32.restype = i32


@functools.cache
def library() -> tuple[ctypes.CDLL | None, str | None]:
    return open_library(SOURCE, _declare)


def available(device: torch.device) -> str | None:
    if device.type != "cpu":
        return "the C kernel runs on the CPU only"
    return library()[1]


def _lib() -> ctypes.CDLL:
    lib, reason = library()
    if lib is None:
        raise RuntimeError(reason)
    return lib


def store_c(state, dtype, rounding="nearest", group=None, seed=0):
    if dtype == "fp32":
        return state.float().clone(), None
    state = state.float().contiguous()
    n, h, k, v = state.shape
    values = torch.empty(state.shape, dtype=STORAGE_DTYPES[dtype])
    scales = torch.empty(scale_shape(state.shape, group)) if dtype == "int8" else None
    gk, gv = group or (1, 1)
    _lib().state_store_f32(
        state.data_ptr(), values.data_ptr(), None if scales is None else scales.data_ptr(),
        n, h, k, v, gk, gv, CODES[dtype], int(rounding == "stochastic"), seed & 0xFFFFFFFF,
        torch.get_num_threads(),
    )  # fmt: skip
    return values, scales


def load_c(values, scales=None, group=None):
    if values.dtype == torch.float32:
        return values.clone()
    values = values.contiguous()
    n, h, k, v = values.shape
    out = torch.empty(values.shape, dtype=torch.float32)
    gk, gv = group or (1, 1)
    scales = None if scales is None else scales.float().contiguous()
    _lib().state_load_f32(
        values.data_ptr(), None if scales is None else scales.data_ptr(), out.data_ptr(),
        n, h, k, v, gk, gv, CODE_OF_DTYPE[values.dtype], torch.get_num_threads(),
    )  # fmt: skip
    return out


_c = {"language": "c", "target_hardware": ["cpu"], "dependencies": ["torch", "gcc (OpenMP)"]}
register_solution(STORE, "c", store_c, available=available, dtypes=(torch.float32,),
                  description="C + OpenMP, one pass", **_c)  # fmt: skip
register_solution(LOAD, "c", load_c, available=available,
                  dtypes=(torch.float32, torch.bfloat16, torch.float16), description="C + OpenMP, one pass", **_c)  # fmt: skip
