"""What every Triton backend shares: whether Triton can run here, and the tile-size rounding.

The raw kernels (`<family>/triton_kernels.py`) import triton at module level; the launchers
(`<family>/triton.py`) import them only inside a call, so a machine without triton still loads
every backend module and each reports itself unavailable with `triton_unavailable`'s reason.
"""

from __future__ import annotations

import importlib.util
import os

import torch

HAVE_TRITON = importlib.util.find_spec("triton") is not None


def triton_unavailable(device: torch.device) -> str | None:
    """Why Triton kernels cannot run on `device` (None: they can)."""
    if not HAVE_TRITON:
        return "triton is not installed (pip install triton)"
    if device.type == "cuda":
        return None
    if device.type == "cpu" and os.environ.get("TRITON_INTERPRET") == "1":
        return None  # the interpreter runs kernels on CPU tensors, for correctness checks only
    return "Triton kernels need a CUDA device (or TRITON_INTERPRET=1 set before import, for a CPU check)"


# What every Triton solution registers with (register_solution's keywords): a GPU kernel that
# reports itself unavailable without Triton or a device; `dtypes` the float types its tiles take.
TRITON_SOLUTION = {
    "language": "triton",
    "target_hardware": ["cuda"],
    "dependencies": ["torch", "triton"],
    "available": triton_unavailable,
}
HALF_AND_FULL = (torch.float32, torch.bfloat16, torch.float16)


def next_pow2(n: int, lo: int = 16) -> int:
    """The smallest power of two >= n and >= lo: `tl.arange` tiles must be powers of two."""
    return max(lo, 1 << (max(n, 1) - 1).bit_length())
