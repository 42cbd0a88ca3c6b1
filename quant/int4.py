"""Symmetric INT4 in groups along the input dimension: the numbers a W4A16 weight holds.

    scale = absmax(group) / 7.5          per row and group of `group_size` inputs   [N, K/g]
    q     = clamp(round(w * (1 / scale)), -8, 7)                                     [N, K]
    w_q   = q * scale

The steps are torchao's fake quant (`IntxFakeQuantizeConfig(torch.int4, group_size, is_symmetric=True)`)
op for op, so a QAT-trained model and its packed INT4 form compute with the same weights:
the scale is computed in the weight's dtype, clamped below at that dtype's smallest normal (an
all-zero group gets that tiny scale and q = 0, never a division by zero) and kept in float32;
rounding is half to even on `w * (1 / scale)` (a product with the reciprocal, not a division);
the dequantized weight is `q * scale` in float32, cast back to the weight's dtype.
Dividing by 7.5 rather than 7 lets the largest magnitude land on -8 or, rounded up to 8, be
clamped to 7: the whole signed range is used at the cost of a clamp on the positive side.
"""

from __future__ import annotations

import torch

QMIN, QMAX = -8, 7
HALF_RANGE = (QMAX - QMIN) / 2  # 7.5


def check_groups(shape: torch.Size | tuple, group_size: int) -> None:
    """A 2-D weight [N, K] whose K splits into whole groups."""
    if len(shape) != 2:
        raise ValueError(f"expected a 2-D weight [out_features, in_features], got shape {tuple(shape)}")
    if not isinstance(group_size, int) or group_size < 2 or shape[1] % group_size:
        raise ValueError(
            f"group_size = {group_size!r} does not divide in_features = {shape[1]}; "
            f"allowed: an integer >= 2 that divides it"
        )


def quantize_int4(w: torch.Tensor, group_size: int = 32) -> tuple[torch.Tensor, torch.Tensor]:
    """w [N, K] (float) -> (q int8 [N, K] in [-8, 7], scale float32 [N, K/group_size])."""
    check_groups(w.shape, group_size)
    n, k = w.shape
    groups = w.detach().reshape(n, k // group_size, group_size)  # [N, G, g]
    absmax = groups.abs().amax(dim=-1)  # [N, G], in w's dtype (as torchao)
    scale = (absmax / HALF_RANGE).clamp(min=torch.finfo(w.dtype).smallest_normal).to(torch.float32)
    q = torch.round(groups * (1.0 / scale[..., None])).clamp(QMIN, QMAX)  # [N, G, g]
    return q.reshape(n, k).to(torch.int8), scale


def dequantize_int4(
    q: torch.Tensor, scale: torch.Tensor, group_size: int, dtype: torch.dtype | None = None
) -> torch.Tensor:
    """q int8 [N, K], scale [N, K/group_size] -> w [N, K] in `dtype` (default: the scale's)."""
    check_groups(q.shape, group_size)
    dtype = dtype or scale.dtype
    n, k = q.shape
    w = q.to(dtype).reshape(n, k // group_size, group_size) * scale[..., None]  # [N, G, g]
    return w.reshape(n, k).to(dtype)
