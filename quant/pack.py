"""`quantize_model`: the selected nn.Linear modules of a model become Int4Linear, in place.

From a float model this is post-training quantization (PTQ). From a model trained with QAT it is
the conversion: run with the scheme recorded in its config (`config.attnlab_quant`), it applies the
same quantize_int4 that torchao's fake quant applied during training, so the INT4 model computes
the fake-quantized forward (up to the matmul's summation order).
"""

from __future__ import annotations

from torch import nn

from .checkpoint import compressed_tensors_config
from .int4_linear import Int4Linear
from .scheme import Label, QuantScheme, quant_field
from .selection import linear_modules, select_linears


def quantize_model(model: nn.Module, scheme: QuantScheme, label: Label = quant_field) -> nn.Module:
    """Swap the scheme's modules for Int4Linear (from their current weights) and record the scheme
    in `model.config`: `attnlab_quant` (the attnlab fields) and `quantization_config` (the
    compressed-tensors description every reader of the checkpoint uses). Returns the model."""
    scheme.check(label)
    names = select_linears(model, scheme, label)
    for name in names:
        model.set_submodule(name, Int4Linear.from_linear(model.get_submodule(name), scheme.group_size))
    config = getattr(model, "config", None)
    if config is not None:
        config.attnlab_quant = scheme.to_dict()
        ignore = list(linear_modules(model))  # what is still an nn.Linear: full precision
        config.quantization_config = compressed_tensors_config(scheme.group_size, ignore)
    return model


def int4_modules(model: nn.Module) -> dict[str, Int4Linear]:
    return {name: m for name, m in model.named_modules() if isinstance(m, Int4Linear)}
