"""attnlab: a research framework for attention architectures.

from attnlab import AttnLabConfig, AttnLabForCausalLM

The model classes load on first use (PEP 562), so `attnlab --help` and other light commands do
not import torch and transformers. Importing them registers the `attnlab` model type with
transformers' Auto classes (archs/model.py).
"""

from __future__ import annotations

import importlib

from .common import quiet_torchao_import

quiet_torchao_import()  # warnings that importing torchao logs, none about the run (common/quiet.py)

__all__ = ["AttnLabConfig", "AttnLabForCausalLM", "AttnLabModel"]
__version__ = "0.1.0"

_LAZY = {
    "AttnLabConfig": "attnlab.archs.config",
    "AttnLabForCausalLM": "attnlab.archs.model",
    "AttnLabModel": "attnlab.archs.model",
}


def __getattr__(name: str):
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'attnlab' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *_LAZY])
