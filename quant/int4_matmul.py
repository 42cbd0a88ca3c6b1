"""torch's own packed-INT4 matmul (the "tinygemm" ops), on CPU and CUDA: which weights it takes,
packing a weight into its layout, the matmul, and reading the integers back out.

Both ops compute `x @ ((q_u - 8) * scale + zero).T` from q_u = q + 8 (0..15) packed two to a byte
in a layout of the op's own, with `scales_and_zeros` [K/g, N, 2]; attnlab's symmetric INT4 uses
zero = 0. The packed layout depends on the device (and on CPU on the instruction set torch picked),
so it never leaves memory: checkpoints hold compressed-tensors' int32 words (int32_packing.py),
and `decode` reads q back out of any layout by multiplying with rows of the identity, with scale 1
and zero 0, which gives the integers exactly (each output is one product 1 * q plus zeros).

What each op takes, found by trying shapes on torch 2.13:
- CPU (`_convert_weight_to_int4pack_for_cpu` / `_weight_int4pack_mm_for_cpu`): N a multiple of 16,
  group size 32, 64, 128 or 256, x and scales float32, bfloat16 or float16 (float32 equals a float32
  matmul up to summation order).
- CUDA (`_convert_weight_to_int4pack` / `_weight_int4pack_mm`; compute capability 8.0+): N a
  multiple of 8, K a multiple of 16 * inner_k_tiles (8, 4 or 2), the same group sizes, x and
  scales bfloat16. This path is written to torch's documented contract but is NOT tested here
  (the test machine has no GPU).
Everything else takes Int4Linear's fallback: dequantize, then an ordinary matmul.
"""

from __future__ import annotations

import torch

GROUP_SIZES = (32, 64, 128, 256)
CPU_DTYPES = (torch.float32, torch.bfloat16, torch.float16)
CUDA_INNER_K_TILES = (8, 4, 2)
DECODE_ROWS = 256  # identity rows per decode matmul: bounds its memory for large K


def kernel_for(
    device: torch.device, out_features: int, in_features: int, group_size: int, dtype: torch.dtype
) -> str | None:
    """'cpu' or 'cuda' when torch's packed INT4 matmul takes this weight with scales in `dtype` on
    `device`, else None (the dequantize fallback)."""
    if group_size not in GROUP_SIZES or in_features % group_size:
        return None
    if device.type == "cpu" and out_features % 16 == 0 and dtype in CPU_DTYPES:
        return "cpu"
    if (
        device.type == "cuda"
        and dtype == torch.bfloat16
        and out_features % 8 == 0
        and cuda_inner_k_tiles(in_features) is not None
        and torch.cuda.get_device_capability(device) >= (8, 0)
    ):
        return "cuda"
    return None


def cuda_inner_k_tiles(in_features: int) -> int | None:
    return next((t for t in CUDA_INNER_K_TILES if in_features % (16 * t) == 0), None)


def pack_for_kernel(q: torch.Tensor, kernel: str) -> torch.Tensor:
    """q int8 [N, K] in [-8, 7] -> the op's packed weight, on q's device."""
    u = q.to(torch.int32) + 8  # [N, K], 0..15
    if kernel == "cpu":
        return torch._convert_weight_to_int4pack_for_cpu(u.contiguous(), 2)  # uint8 [N, K/2]
    # CUDA's op takes two values per byte, the even element in the high nibble.
    u = u.to(torch.uint8)
    pairs = (u[:, ::2] << 4 | u[:, 1::2]).contiguous()  # uint8 [N, K/2]
    return torch._convert_weight_to_int4pack(pairs, cuda_inner_k_tiles(q.shape[1]))


def scales_and_zeros(scale: torch.Tensor) -> torch.Tensor:
    """scale [N, G] -> [G, N, 2]: the ops' per-group (scale, zero) pairs, zero = 0 (symmetric)."""
    return torch.stack([scale.t(), torch.zeros_like(scale.t())], dim=-1).contiguous()


def int4_matmul(
    x: torch.Tensor, packed: torch.Tensor, group_size: int, sz: torch.Tensor, kernel: str
) -> torch.Tensor:
    """x [M, K] (contiguous, in sz's dtype) -> [M, N] = x @ (q * scale).T."""
    if kernel == "cpu":
        return torch._weight_int4pack_mm_for_cpu(x, packed, group_size, sz)
    return torch._weight_int4pack_mm(x, packed, group_size, sz)


def decode(packed: torch.Tensor, kernel: str, out_features: int, in_features: int, group_size: int):
    """The op's packed weight -> q int8 [N, K] (exact; one identity matmul, in row blocks)."""
    dtype = torch.float32 if kernel == "cpu" else torch.bfloat16
    device = packed.device
    unit = torch.ones(out_features, in_features // group_size, dtype=dtype, device=device)
    sz = scales_and_zeros(unit)  # scale 1, zero 0: the matmul returns q itself
    q = torch.empty(out_features, in_features, dtype=torch.int8, device=device)
    for start in range(0, in_features, DECODE_ROWS):
        rows = min(DECODE_ROWS, in_features - start)
        eye = torch.zeros(rows, in_features, dtype=dtype, device=device)  # [rows, K]
        eye[torch.arange(rows), start + torch.arange(rows)] = 1
        q[:, start : start + rows] = int4_matmul(eye, packed, group_size, sz, kernel).t().to(torch.int8)
    return q
