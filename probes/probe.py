"""What every probe is: scores per (layer, head) from one published definition, plus the task that
ablation re-runs to see whether the heads it found matter.

    result = probe.score(target, settings)                      # ProbeResult
    acc = probe.accuracy(target, settings, heads, mode)          # task accuracy with heads masked

A probe is one file with one class registered by `@register_probe` (probes/probe_registry.py).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

from .target import ProbeTarget


@dataclass
class ProbeSettings:
    """Data sizes of every probe; the defaults are the published settings."""

    seed: int = 0
    # TransformerLens head detector demo: batch 10, 50 random tokens repeated twice.
    batch: int = 10
    seq_len: int = 50
    repeats: int = 2
    # Olsson et al. prefix matching: 25 random tokens repeated 4 times.
    prefix_len: int = 25
    prefix_repeats: int = 4
    # Wu et al. retrieval grid, scaled down: lengths × depths × needles, threshold 0.1.
    niah_lengths: int = 4
    niah_depths: int = 5
    niah_needles: int = 2
    max_context: int | None = None  # cap on the NIAH prompt + answer length (default: model context, ≤ 512)
    key_len: int = 1
    value_len: int = 4
    # kv_retrieval: key-value pairs per prompt, and whether pairs are written `0 k v` (MQAR separator).
    kv_pairs: int = 8
    kv_separator: bool = False
    progress: bool = True

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class ProbeResult:
    probe: str
    scores: list[list[float]]  # [layer][head]; NaN where undefined
    threshold: float
    details: dict = field(default_factory=dict)

    def ranked(self) -> list[tuple[int, int, float]]:
        """(layer, head, score) by score descending; NaN last; ties by (layer, head)."""
        flat = [(l, h, s) for l, row in enumerate(self.scores) for h, s in enumerate(row)]
        return sorted(
            flat, key=lambda x: (math.isnan(x[2]), -x[2] if not math.isnan(x[2]) else 0, x[0], x[1])
        )

    def top(self, k: int) -> list[tuple[int, int]]:
        return [(l, h) for l, h, _ in self.ranked()[:k]]

    def found(self) -> list[tuple[int, int, float]]:
        """Heads scoring above the threshold ("retrieval heads", "induction heads", ...)."""
        return [(l, h, s) for l, h, s in self.ranked() if not math.isnan(s) and s > self.threshold]

    def to_dict(self) -> dict:
        return {
            "scores": [[None if math.isnan(s) else round(s, 6) for s in row] for row in self.scores],
            "threshold": self.threshold,
            "heads_found": [[l, h, round(s, 6)] for l, h, s in self.found()],
            "details": self.details,
        }


class Probe:
    name: str = ""
    threshold: float = 0.5
    summary: str = ""  # one line for probe.md
    task: str = ""  # what `accuracy` measures, for probe.md

    def score(self, target: ProbeTarget, settings: ProbeSettings) -> ProbeResult:
        raise NotImplementedError

    def accuracy(
        self, target: ProbeTarget, settings: ProbeSettings, heads=(), mode: str = "uniform"
    ) -> float:
        raise NotImplementedError
