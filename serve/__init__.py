"""Serving: one engine for every mixer family (docs/serving.md).

from attnlab.serve import LLM, SamplingParams
LLM(path_or_model, cache_memory="1GiB").generate(prompts, SamplingParams(max_tokens=64))
"""

from .config import EngineConfig
from .engine import LLMEngine
from .llm import LLM
from .request import RequestOutput
from .sampling import SamplingParams

__all__ = ["LLM", "EngineConfig", "LLMEngine", "RequestOutput", "SamplingParams"]
