"""Decode speed of a family's variants through the serving engine (serve/quant_bench.py): the same
`batch` prompts (seeded random token ids) decode `new_tokens` tokens greedily; decode tokens/s =
tokens after each request's first / (the last token's time - the first token's), as
`attnlab bench spec` counts it. Every variant is warmed up once, then the variants take turns for
`repeats` rounds (a slow spell of a shared machine hits them alike); the median is reported.
Runs in the calling process with its torch threads, one model at a time.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass
from pathlib import Path

import torch

from .config import EngineConfig
from .engine import LLMEngine
from .sampling import SamplingParams


@dataclass
class SpeedSettings:
    batch: int = 8
    prompt_len: int = 128
    new_tokens: int = 64
    repeats: int = 3
    seed: int = 0


def prompts(vocab_size: int, settings: SpeedSettings) -> list[list[int]]:
    gen = torch.Generator().manual_seed(settings.seed)
    return torch.randint(1, vocab_size, (settings.batch, settings.prompt_len), generator=gen).tolist()


def engine_for(model, settings: SpeedSettings) -> LLMEngine:
    """An engine whose whole batch prefills in one step and decodes together."""
    max_len = settings.prompt_len + settings.new_tokens
    config = EngineConfig(
        cache_memory=4 * settings.batch * model.state_bytes(max_len + 16) + (8 << 20),
        max_num_seqs=settings.batch, max_model_len=max_len,
        max_num_batched_tokens=max(2048, settings.batch * settings.prompt_len),
    )  # fmt: skip
    return LLMEngine(model, None, config)


def decode_round(engine: LLMEngine, batch: list[list[int]], new_tokens: int) -> float:
    """One batch to the end -> decode tokens/s."""
    params = SamplingParams(max_tokens=new_tokens, temperature=0.0, ignore_eos=True)
    ids = [engine.add_request(p, params) for p in batch]
    done = {}
    while engine.has_unfinished():
        for out in engine.step():
            if out.finished:
                done[out.request_id] = out
    outs = [done[i] for i in ids]
    tokens = sum(len(o.token_ids) - 1 for o in outs)
    seconds = max(o.metrics.token_times[-1] for o in outs) - min(o.metrics.token_times[0] for o in outs)
    return tokens / seconds if seconds > 0 else float("nan")


def decode_speed(folders: dict[str, str | Path], settings: SpeedSettings) -> dict[str, dict]:
    """variant -> {"tokens_per_s": the median round, "rounds": every round's}."""
    from ..evals import load_model

    engines, batch = {}, None
    for variant, folder in folders.items():
        model, _, _ = load_model(folder, "cpu")
        batch = batch or prompts(model.config.vocab_size, settings)
        engines[variant] = engine_for(model, settings)
    rounds = {v: [] for v in engines}
    with torch.inference_mode():
        for engine in engines.values():  # warm-up
            decode_round(engine, batch, settings.new_tokens)
        for _ in range(settings.repeats):
            for variant, engine in engines.items():
                rounds[variant].append(decode_round(engine, batch, settings.new_tokens))
    return {v: {"tokens_per_s": statistics.median(r), "rounds": r} for v, r in rounds.items()}
