"""Quantization-aware training with torchao: its fake-quantized Linear (FakeQuantizedLinear, whose
forward quantizes and dequantizes the weight with a straight-through estimator for the rounding)
in place of the scheme's nn.Linear modules, a switch for the fake quant, and the way back to
plain nn.Linear holding the same latent weights (for saving a model that loads without torchao).

torchao's weight fake quant is symmetric INT4 per group exactly as int4.py computes it; its
gradient with respect to the latent weight is the incoming gradient where round(w / scale) lies in
[-8, 7] and 0 where the clamp cut it (round(w / scale) = 8: the group's largest positive weight
when it is the absmax). The scale carries no gradient (it is computed under no_grad).
"""

from __future__ import annotations

import torch
from torch import nn

from .scheme import Label, QuantScheme, quant_field
from .selection import select_linears


def prepare_qat(model: nn.Module, scheme: QuantScheme, label: Label = quant_field) -> list[str]:
    """Swap the scheme's nn.Linear modules for torchao's FakeQuantizedLinear (sharing the same weight
    Parameters, so an optimizer built before or after sees the same tensors) and record the scheme as
    `model.config.attnlab_quant`. Returns the names swapped. Fake quant starts enabled."""
    from torchao.quantization import quantize_
    from torchao.quantization.qat import IntxFakeQuantizeConfig, QATConfig

    scheme.check(label)
    names = select_linears(model, scheme, label)
    chosen = set(names)
    weight_config = IntxFakeQuantizeConfig(torch.int4, group_size=scheme.group_size, is_symmetric=True)
    quantize_(
        model, QATConfig(weight_config=weight_config, step="prepare"), filter_fn=lambda m, fqn: fqn in chosen
    )
    if getattr(model, "config", None) is not None:
        model.config.attnlab_quant = scheme.to_dict()
    return names


def fake_quant_modules(model: nn.Module) -> dict[str, nn.Module]:
    """The FakeQuantizedLinear modules by name ({} when torchao was never applied)."""
    return {name: m for name, m in model.named_modules() if hasattr(m, "weight_fake_quantizer")}


def set_fake_quant(model: nn.Module, enabled: bool) -> None:
    """Fake quant on or off in every FakeQuantizedLinear (off: the plain Linear forward)."""
    from torchao.quantization.qat.linear import enable_linear_fake_quant

    for module in fake_quant_modules(model).values():
        enable_linear_fake_quant(module, enabled)


def fake_quant_enabled(model: nn.Module) -> dict[str, bool]:
    return {name: bool(m.weight_fake_quantizer.enabled) for name, m in fake_quant_modules(model).items()}


def strip_fake_quant(model: nn.Module) -> int:
    """FakeQuantizedLinear -> nn.Linear holding the same weight (and bias) Parameters, in place; the
    model is a plain one again (config.attnlab_quant keeps the scheme). Returns how many."""
    found = fake_quant_modules(model)
    for name, module in found.items():
        model.set_submodule(name, module.to_linear())
    return len(found)
