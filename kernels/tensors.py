"""Small tensor helpers shared by op definitions, workloads and the harness."""

from __future__ import annotations

import torch

DTYPES = {
    "float32": torch.float32,
    "bfloat16": torch.bfloat16,
    "float16": torch.float16,
    "float64": torch.float64,
}
SHORT = {torch.float32: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16", torch.float64: "fp64"}


def torch_dtype(name: str) -> torch.dtype:
    if name not in DTYPES:
        raise ValueError(f"dtype {name!r} is unknown; allowed: {', '.join(DTYPES)}")
    return DTYPES[name]


def random_tensor(shape, dtype, gen: torch.Generator, device, scale: float = 1.0) -> torch.Tensor:
    """Seeded N(0, scale^2), drawn in fp32 on the CPU so every device and dtype sees the same numbers."""
    return (torch.randn(*shape, generator=gen) * scale).to(device=device, dtype=dtype)


def compute_dtype(*tensors: torch.Tensor) -> torch.dtype:
    """fp32 arithmetic for fp32/bf16/fp16 inputs; float64 stays float64 (gradcheck)."""
    dtype = torch.float32
    for t in tensors:
        if t is not None:
            dtype = torch.promote_types(dtype, t.dtype)
    return dtype


def relative_rmse(ref: torch.Tensor, out: torch.Tensor) -> float:
    """fla's error ratio (`fla.utils.testing.get_err_ratio`): RMS(out - ref) / (RMS(ref) + 1e-8)."""
    ref, out = ref.detach().double(), out.detach().double()
    err = (out - ref).square().mean().sqrt().item()
    base = ref.square().mean().sqrt().item()
    return err / (base + 1e-8)
