"""Weight bytes as a checkpoint stores them, counting an Int4Linear as its packed INT4 weight +
scales (+ shape and bias): what `attnlab quantize` reports before and after."""

from __future__ import annotations

from torch import nn

from .int4_linear import Int4Linear


def weight_bytes(model: nn.Module, within: list[str] | None = None) -> int:
    """Bytes of every parameter and persistent buffer (a tied tensor once), an Int4Linear as its
    packed_bytes(). `within`: only the modules with these names and what they contain."""
    total, seen = 0, set()
    for name, module in model.named_modules():
        if within is not None and not any(name == w or name.startswith(w + ".") for w in within):
            continue
        if isinstance(module, Int4Linear):
            total += module.packed_bytes()
            continue
        tensors = list(module.parameters(recurse=False)) + [
            b
            for key, b in module.named_buffers(recurse=False)
            if key not in module._non_persistent_buffers_set
        ]
        for t in tensors:
            if id(t) not in seen:
                seen.add(id(t))
                total += t.numel() * t.element_size()
    return total
