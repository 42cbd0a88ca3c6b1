"""RMSNorm: the inference path (torch's fused rms_norm on fp32 CPU tensors) gives the same bits as
the decomposed fp32 formula HF's Llama norm uses, and training keeps the decomposed path."""

from __future__ import annotations

import pytest
import torch

from attnlab.archs.norms import RMSNorm


def by_hand(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    """HF LlamaRMSNorm: x * rsqrt(mean(x^2) + eps) in fp32, times the weight."""
    x32 = x.float()
    return weight * (x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + eps)).to(x.dtype)


@pytest.mark.parametrize("shape", [(8, 1, 256), (1, 512, 32), (2, 3, 4096)])
@pytest.mark.parametrize("eps", [1e-6, 1e-5])
def test_inference_norm_equals_the_formula_bit_for_bit(shape, eps):
    torch.manual_seed(0)
    norm = RMSNorm(shape[-1], eps)
    norm.weight.data = torch.randn(shape[-1])
    x = torch.randn(shape) * 3
    with torch.no_grad():
        got = norm(x)
    assert torch.equal(got, by_hand(x, norm.weight.detach(), eps))
    with torch.inference_mode():
        assert torch.equal(norm(x), got)


def test_training_takes_the_decomposed_path_and_its_gradient(monkeypatch):
    torch.manual_seed(0)
    norm = RMSNorm(16)
    x = torch.randn(4, 16, requires_grad=True)
    fused = torch.nn.functional.rms_norm
    calls = []
    monkeypatch.setattr(torch.nn.functional, "rms_norm", lambda *a, **k: calls.append(1) or fused(*a, **k))
    y = norm(x)
    assert not calls  # gradients wanted: the formula, as before
    y.sum().backward()
    xr = x.detach().clone().requires_grad_(True)
    by_hand(xr, norm.weight.detach(), norm.eps).sum().backward()
    torch.testing.assert_close(x.grad, xr.grad)
    with torch.no_grad():
        norm(x)
    assert calls == [1]  # inference: the fused op
