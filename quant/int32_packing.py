"""INT4 values in int32 words, compressed-tensors' `pack-quantized` layout (its `pack_to_int32`
with num_bits 4 along the input dimension), so a saved `weight_packed` reads back in any
compressed-tensors reader (vLLM, llm-compressor) and theirs reads here.

Each row of q [N, K] (int8 in [-8, 7]) is offset by +8 to 0..15 and packed 8 per word,
element i at bits 4*(i % 8) of word i // 8 (little end first); a row whose K is not a multiple
of 8 is padded with zero nibbles, as the library pads. Plain byte arithmetic here, so loading an
INT4 folder needs torch only; tests/test_quant_int4.py checks the bits against the library.
"""

from __future__ import annotations

import sys

import torch

OFFSET = 8


def pack_int4_rows(q: torch.Tensor) -> torch.Tensor:
    """q int8 [N, K] in [-8, 7] -> int32 [N, ceil(K / 8)]."""
    n, k = q.shape
    u = (q.to(torch.int16) + OFFSET).to(torch.uint8)  # [N, K], 0..15
    pad = -k % 8
    if pad:
        u = torch.cat([u, u.new_zeros(n, pad)], dim=1)
    pairs = u.reshape(n, -1, 2)
    data = pairs[..., 0] | (pairs[..., 1] << 4)  # [N, ceil(K/8) * 4] bytes: even element low nibble
    if sys.byteorder == "big":  # words are little-endian in the format
        data = data.reshape(n, -1, 4).flip(-1).reshape(n, -1)
    return data.contiguous().view(torch.int32)


def unpack_int4_rows(packed: torch.Tensor, in_features: int) -> torch.Tensor:
    """int32 [N, ceil(K / 8)] -> q int8 [N, K] in [-8, 7]."""
    n = packed.shape[0]
    data = packed.contiguous().view(torch.uint8)  # [N, 4 * words]
    if sys.byteorder == "big":
        data = data.reshape(n, -1, 4).flip(-1).reshape(n, -1)
    u = torch.stack([data & 15, data >> 4], dim=-1).reshape(n, -1)[:, :in_features]
    return u.to(torch.int8) - OFFSET
