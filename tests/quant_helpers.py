"""A hand-made weight for the INT4 tests (tests/test_quant_int4.py, tests/test_quant_qat.py)."""

from __future__ import annotations

import torch

SMALLEST_NORMAL = torch.finfo(torch.float32).smallest_normal
# positions where round(w / scale) = 8, cut to 7 by the clamp (zero gradient under the STE)
CLAMPED = [(0, 0), (1, 0), (1, 32)]


def hand_tensor() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """w [2, 64] in four groups of 32 with power-of-two scales, so every step is exact by hand:
    -> (w, q, scale). Row 0: absmax 7.5 (scale 1), then an all-zero group; row 1: absmax 15
    (scale 2), then absmax 3.75 (scale 0.5). +7.5 * scale rounds to 8 and is clamped to 7;
    -7.5 * scale rounds (half to even) to -8 and stays."""
    w = torch.zeros(2, 64)
    q = torch.zeros(2, 64, dtype=torch.int8)
    w[0, :6] = torch.tensor([7.5, -7.5, 2.5, 3.5, -0.4, 1.2])
    q[0, :6] = torch.tensor([7, -8, 2, 4, 0, 1])  # 2.5 -> 2 and 3.5 -> 4: half to even
    w[1, :4] = torch.tensor([15.0, -3.0, 5.0, 0.9])
    q[1, :4] = torch.tensor([7, -2, 2, 0])  # 15/2 = 7.5 -> 8 -> 7; -1.5 -> -2; 2.5 -> 2; 0.45 -> 0
    w[1, 32:35] = torch.tensor([3.75, 1.0, -3.75])
    q[1, 32:35] = torch.tensor([7, 2, -8])  # 7.5 -> 8 -> 7; 2; -7.5 -> -8
    scale = torch.tensor([[1.0, SMALLEST_NORMAL], [2.0, 0.5]])  # the zero group: the dtype's smallest normal
    return w, q, scale
