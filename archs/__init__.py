"""Model definitions: mixer families, FFNs, the HF model and its cache, greedy decoding.

    from attnlab.archs import AttnLabConfig, AttnLabForCausalLM, greedy_decode, preset

Names load on first use (PEP 562), so importing a light part of archs (presets, specs) does not
pull in torch.
"""

from __future__ import annotations

import importlib

_EXPORTS = {
    "AttnLabConfig": "config",
    "AttnLabForCausalLM": "model",
    "GreedyOutput": "generate",
    "greedy_decode": "generate",
    "preset": "presets",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        value = getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
