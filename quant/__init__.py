"""INT4 weight-only quantization (W4A16, docs/quantization.md): symmetric INT4 in groups along the
input dimension, as Kimi K2 Thinking ships it.

    from attnlab.quant import QuantScheme, quantize_model, save_int4
    quantize_model(model, QuantScheme(group_size=32))  # PTQ, or the conversion of a QAT model
    save_int4(model, tokenizer, "out")                  # compressed-tensors pack-quantized folder

    int4.py           quantize_int4 / dequantize_int4: torchao's fake-quant numerics
    int32_packing.py  the int32 words of compressed-tensors' pack-quantized format
    int4_matmul.py    torch's packed INT4 matmul (CPU, CUDA): layouts, the op, reading q back
    int4_linear.py    Int4Linear: the packed layer; its state dict is the interchange format
    scheme.py         QuantScheme: fields, defaults, checks (the train config's `quant:` section)
    selection.py      which nn.Linear modules a scheme quantizes
    pack.py           quantize_model: nn.Linear -> Int4Linear
    checkpoint.py     save_int4 / load_int4 and the quantization_config
    sizes.py          weight_bytes
    qat.py            torchao QAT: prepare, switch, strip

Between archs (whose from_pretrained loads INT4 folders through load_int4) and kernels; it
imports only common. torchao is needed for QAT only; compressed-tensors not at all (the tests use
it as an independent reader).
"""

from __future__ import annotations

from ..common import lazy_exports

_LAZY = {
    "quantize_int4": "int4",
    "dequantize_int4": "int4",
    "pack_int4_rows": "int32_packing",
    "unpack_int4_rows": "int32_packing",
    "kernel_for": "int4_matmul",
    "Int4Linear": "int4_linear",
    "QuantScheme": "scheme",
    "DEFAULT_MODULES": "scheme",
    "DEFAULT_SKIP": "scheme",
    "flag_label": "scheme",
    "quant_field": "scheme",
    "section_label": "scheme",
    "select_linears": "selection",
    "quantize_model": "pack",
    "int4_modules": "pack",
    "compressed_tensors_config": "checkpoint",
    "is_int4_config": "checkpoint",
    "load_int4": "checkpoint",
    "save_int4": "checkpoint",
    "weight_bytes": "sizes",
    "prepare_qat": "qat",
    "set_fake_quant": "qat",
    "fake_quant_enabled": "qat",
    "strip_fake_quant": "qat",
}
__all__ = sorted(_LAZY)
__getattr__ = lazy_exports(__name__, _LAZY)
