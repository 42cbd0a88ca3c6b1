"""Parameter counts of a run config without allocating weights (meta device), and solving an
integer config field for a target count (sweeps' `match_params`)."""

from __future__ import annotations

import copy

import torch

from ..archs import AttnLabForCausalLM


def nominal_vocab(cfg) -> int:
    """The vocabulary the run will have, known before any data is built."""
    if cfg.model.vocab_size:
        return cfg.model.vocab_size
    if cfg.data.source == "task":
        return cfg.data.task.vocab_size
    tokenizer = cfg.data.text.tokenizer
    if tokenizer == "byte":
        return 256
    if tokenizer == "bpe":
        return cfg.data.text.bpe_vocab_size
    raise ValueError("a Hugging Face tokenizer's size is only known once loaded; set model.vocab_size")


def count_params(cfg) -> int:
    with torch.device("meta"):
        model = AttnLabForCausalLM(cfg.model.hf_config(nominal_vocab(cfg)))
    return sum(p.numel() for p in model.parameters())


def solve_int_for_params(cfg, key: str, target: int, high: int = 1 << 16) -> int:
    """The value of integer field `key` (e.g. model.extra.intermediate_size) whose parameter count
    is closest to `target`; counts grow with the field, so a bisection finds it."""

    def params_at(value: int) -> int:
        trial = copy.deepcopy(cfg)
        section, *path = key.split(".")
        node = getattr(trial, section)
        for part in path[:-1]:
            node = getattr(node, part) if not isinstance(node, dict) else node.setdefault(part, {})
        if isinstance(node, dict):
            node[path[-1]] = value
        else:
            setattr(node, path[-1], value)
        return count_params(trial)

    lo, hi = 1, high
    if params_at(lo) >= target:
        return lo
    if params_at(hi) < target:
        raise ValueError(f"{key} up to {high} gives fewer than {target} parameters")
    while hi - lo > 1:  # invariant: params(lo) < target <= params(hi)
        mid = (lo + hi) // 2
        if params_at(mid) < target:
            lo = mid
        else:
            hi = mid
    return lo if target - params_at(lo) <= params_at(hi) - target else hi
