"""Serving: one engine for every mixer family (docs/serving.md).

from attnlab.serve import LLM, SamplingParams
LLM(path_or_model, cache_memory="1GiB").generate(prompts, SamplingParams(max_tokens=64))
"""

# Names load on first use (PEP 562), so commands that only need one part (and `attnlab --help`)
# do not import everything.
from __future__ import annotations

import importlib

__all__ = ["LLM", "EngineConfig", "LLMEngine", "RequestOutput", "SamplingParams"]

_LAZY = {
    "EngineConfig": "config",
    "LLMEngine": "engine",
    "LLM": "llm",
    "RequestOutput": "request",
    "SamplingParams": "sampling",
}


def __getattr__(name: str):
    if name in _LAZY:
        value = getattr(importlib.import_module(f"{__name__}.{_LAZY[name]}"), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
