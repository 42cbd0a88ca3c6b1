"""EngineConfig: the serving engine's knobs, checked once (clear errors naming the field)."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass

import torch

from ..common import check_bool, check_choice, check_positive_int
from ..kernels import ROUNDINGS, SCALE_GROUPS, STORAGE_DTYPES
from .prefix_cache import EVICTION_POLICIES

_UNITS = {"": 1, "B": 1, "KB": 10**3, "MB": 10**6, "GB": 10**9, "KIB": 2**10, "MIB": 2**20, "GIB": 2**30}


def device_memory(device: torch.device) -> int:
    """Total memory of the device the cache lives on (RAM for a CPU)."""
    if device.type == "cuda":
        return torch.cuda.get_device_properties(device).total_memory
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def parse_memory(value, device: torch.device) -> int:
    """Bytes from an int, a size string ('512MiB', '2GB'), or a fraction in (0, 1] of the device's
    memory (0.1 or '10%')."""
    if isinstance(value, bool):
        raise ValueError(f"cache_memory = {value!r}: expected bytes, a size like '512MiB', or a fraction")
    if isinstance(value, str):
        text = value.strip().upper().replace(" ", "")
        if text.endswith("%"):
            value = float(text[:-1]) / 100
        else:
            m = re.fullmatch(r"([0-9]*\.?[0-9]+)([KMG]I?B|B)?", text)
            if not m:
                raise ValueError(
                    f"cache_memory = {value!r}: expected bytes, a size like '512MiB' / '2GB', "
                    "a fraction like 0.1, or a percentage like '10%'"
                )
            return int(float(m.group(1)) * _UNITS[m.group(2) or ""])
    if isinstance(value, float) and 0 < value <= 1:
        return int(value * device_memory(device))
    if isinstance(value, int) and value > 0:
        return value
    raise ValueError(f"cache_memory = {value!r}: must be positive bytes, or a fraction in (0, 1]")


@dataclass(slots=True)
class EngineConfig:
    cache_memory: int | float | str = "1GiB"  # one budget for every layer's pages and slots
    block_size: int = 16  # tokens per page of paged KV, window and latent caches
    max_num_seqs: int = 64  # running sequences at once
    max_num_batched_tokens: int = 2048  # tokens per step: decodes plus prefill chunks
    max_model_len: int | None = None  # prompt + output tokens; default: the model's max positions
    # Storage of recurrent (lightning) state slots; the update math stays fp32
    # (docs/state_precision.md). int8 keeps one fp32 scale per (head, key row) or per (head, 32x32
    # block); rounding on store is to nearest, or stochastic (unbiased).
    state_dtype: str = "fp32"
    state_rounding: str = "nearest"
    state_scales: str = "row"
    # Prefix caching (docs/prefix_caching.md): share cached prefixes' blocks and recurrent-state
    # checkpoints; evict by recency + alpha * FLOPs saved per byte ("cost", Marconi) or by "lru";
    # checkpoints where they pay, or every `state_checkpoint_interval` tokens (a block multiple).
    enable_prefix_caching: bool = False
    prefix_eviction: str = "cost"
    prefix_eviction_alpha: float = 1.0
    state_checkpoint_interval: int | None = None
    # Speculative decoding (docs/speculative_decoding.md): k drafts per decoding request and step,
    # from a draft model (`draft_model`: a path, or a model given to the engine) or n-gram lookup.
    speculative: str | None = None
    num_speculative_tokens: int = 3
    draft_model: str | None = None
    ngram_max: int = 4
    ngram_min: int = 1
    # Prefill scheduling (docs/layered_prefill.md): "chunked" splits prompts into token chunks
    # mixed with decodes; "layered" advances whole prompts one group of layers per step (Layered
    # Prefill), in `layer_groups` groups, or (None) the fewest that keep a step's prompt tokens x
    # layers within max_num_batched_tokens x all layers.
    schedule: str = "chunked"
    layer_groups: int | None = None

    def __post_init__(self):
        for name in ("block_size", "max_num_seqs", "max_num_batched_tokens"):
            check_positive_int(getattr(self, name), name)
        if self.max_model_len is not None and (
            not isinstance(self.max_model_len, int) or self.max_model_len <= 0
        ):
            raise ValueError(f"max_model_len = {self.max_model_len!r}: must be a positive integer or None")
        parse_memory(self.cache_memory, torch.device("cpu"))  # the format, before any model loads
        for name, allowed in (
            ("state_dtype", STATE_DTYPES),
            ("state_rounding", ROUNDINGS),
            ("state_scales", SCALE_GROUPS),
        ):
            check_choice(getattr(self, name), allowed, name)
        check_bool(self.enable_prefix_caching, "enable_prefix_caching")
        check_choice(self.prefix_eviction, PREFIX_EVICTION, "prefix_eviction")
        alpha = self.prefix_eviction_alpha
        if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not 0 <= alpha < float("inf"):
            raise ValueError(f"prefix_eviction_alpha = {alpha!r}: must be a number >= 0")
        if self.state_checkpoint_interval is not None:
            check_positive_int(self.state_checkpoint_interval, "state_checkpoint_interval")
            if self.state_checkpoint_interval % self.block_size:
                raise ValueError(
                    f"state_checkpoint_interval = {self.state_checkpoint_interval}: must be a multiple of "
                    f"block_size = {self.block_size} (checkpoints sit on block boundaries)"
                )
        if self.speculative is not None:
            check_choice(self.speculative, SPECULATIVE, "speculative")
        for name in ("num_speculative_tokens", "ngram_max", "ngram_min"):
            check_positive_int(getattr(self, name), name)
        if self.ngram_min > self.ngram_max:
            raise ValueError(f"ngram_min = {self.ngram_min} > ngram_max = {self.ngram_max}")
        if self.draft_model is not None and not isinstance(self.draft_model, str):
            raise ValueError(f"draft_model = {self.draft_model!r}: must be a path (a string)")
        check_choice(self.schedule, SCHEDULES, "schedule")
        if self.layer_groups is not None:
            check_positive_int(self.layer_groups, "layer_groups")
            if self.schedule != "layered":
                raise ValueError(
                    f"layer_groups = {self.layer_groups}: only used with schedule = 'layered' "
                    f"(schedule is {self.schedule!r})"
                )
        if self.state_dtype == "fp32" and self.state_rounding != "nearest":
            raise ValueError(
                "state_rounding = 'stochastic' needs state_dtype bf16, fp16 or int8 (fp32 stores exactly)"
            )


STATE_DTYPES = STORAGE_DTYPES
PREFIX_EVICTION = EVICTION_POLICIES
SPECULATIVE = ("draft", "ngram")
SCHEDULES = ("chunked", "layered")
