"""Causal ablation (Wu et al. 2024): mask the top-k heads of a probe, re-run its task, and compare the
accuracy drop with masking k random heads drawn from outside the top set, over several draws.

The top set excluded from random draws is the top-k plus every head above the probe's threshold
(Wu et al. draw outside the top 100 of 1024); if that leaves fewer than k heads, only the top-k are
excluded. Masking is Wu et al.'s uniform attention by default, or zeroing the head's output.
"""

from __future__ import annotations

import itertools
import math
import random
import statistics
from dataclasses import dataclass

from tqdm.auto import tqdm

from .probe import Probe, ProbeResult, ProbeSettings
from .target import MODES, ProbeTarget

Head = tuple[int, int]


@dataclass
class AblationResult:
    probe: str
    task: str
    k: int
    mode: str
    baseline: float
    top_heads: list[Head]
    top_accuracy: float
    random_heads: list[list[Head]]
    random_accuracies: list[float]
    excluded_from_random: int

    @property
    def random_mean(self) -> float:
        return statistics.fmean(self.random_accuracies)

    @property
    def drop_top(self) -> float:
        return self.baseline - self.top_accuracy

    @property
    def drop_random(self) -> float:
        return self.baseline - self.random_mean

    def to_dict(self) -> dict:
        return {
            "probe": self.probe,
            "task": self.task,
            "k": self.k,
            "mode": self.mode,
            "baseline_accuracy": self.baseline,
            "top_heads": [list(h) for h in self.top_heads],
            "top_accuracy": self.top_accuracy,
            "random_heads": [[list(h) for h in heads] for heads in self.random_heads],
            "random_accuracies": self.random_accuracies,
            "random_accuracy_mean": self.random_mean,
            "drop_top": self.drop_top,
            "drop_random_mean": self.drop_random,
            "excluded_from_random": self.excluded_from_random,
        }


def parse_ablate(spec: str) -> int:
    """'top:K' -> K (the CLI's --ablate value)."""
    kind, _, count = spec.partition(":")
    if kind != "top" or not count.isdigit() or int(count) < 1:
        raise ValueError(f"--ablate {spec!r}: expected top:K with K a positive integer, e.g. top:8")
    return int(count)


def random_head_sets(pool: list[Head], k: int, draws: int, seed: int) -> list[list[Head]]:
    """`draws` sets of k heads from `pool`; every combination when there are no more than `draws`."""
    if math.comb(len(pool), k) <= draws:
        return [list(c) for c in itertools.combinations(pool, k)]
    rng = random.Random(seed)
    return [sorted(rng.sample(pool, k)) for _ in range(draws)]


def run_ablation(
    target: ProbeTarget,
    probe: Probe,
    result: ProbeResult,
    settings: ProbeSettings,
    k: int,
    mode: str = "uniform",
    draws: int = 5,
) -> AblationResult:
    if mode not in MODES:
        raise ValueError(f"ablation mode {mode!r}; allowed: {', '.join(MODES)}")
    every = target.all_heads()
    if not 1 <= k < len(every):
        raise ValueError(
            f"--ablate top:{k}: the model has {len(every)} heads; k must be in 1..{len(every) - 1}"
        )
    top = result.top(k)
    excluded = set(top) | {(l, h) for l, h, _ in result.found()}
    pool = [h for h in every if h not in excluded]
    if len(pool) < k:
        excluded = set(top)
        pool = [h for h in every if h not in excluded]
    random_sets = random_head_sets(pool, k, draws, settings.seed)
    runs = [(), top, *random_sets]
    accuracies = [
        probe.accuracy(target, settings, heads, mode)
        for heads in tqdm(runs, desc=f"ablate {probe.name}", disable=not settings.progress, leave=False)
    ]
    return AblationResult(
        probe.name,
        probe.task,
        k,
        mode,
        accuracies[0],
        top,
        accuracies[1],
        random_sets,
        accuracies[2:],
        len(excluded),
    )
