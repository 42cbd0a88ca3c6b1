"""Serving: one engine for every mixer family (docs/serving.md).

from attnlab.serve import LLM, SamplingParams
LLM(path_or_model, cache_memory="1GiB").generate(prompts, SamplingParams(max_tokens=64))
"""

from __future__ import annotations

from ..common import lazy_exports

_LAZY = {
    "EngineConfig": "config",
    "LLMEngine": "engine",
    "LLM": "llm",
    "RequestOutput": "request",
    "SamplingParams": "sampling",
    "CrossoverOptions": "crossover",
    "layout_of": "crossover",
    "run_crossover": "crossover:run",
    "CROSSOVER_METRICS": "crossover_report:METRICS",
}
__all__ = sorted(_LAZY)
__getattr__ = lazy_exports(__name__, _LAZY)
