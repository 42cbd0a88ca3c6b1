"""Learning-rate multipliers per optimizer step: linear warmup, then cosine, WSD or constant."""

from __future__ import annotations

import math


def lr_factor(step: int, optim, max_steps: int) -> float:
    """Multiplier of optim.lr at `step` (0-based); reaches optim.min_lr_ratio at max_steps."""
    warmup = min(optim.warmup_steps, max_steps)
    if step < warmup:
        return (step + 1) / warmup
    floor = optim.min_lr_ratio
    if optim.schedule == "constant":
        return 1.0
    if optim.schedule == "cosine":
        progress = min(1.0, (step - warmup) / max(1, max_steps - warmup))
        return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * progress))
    # WSD (warmup-stable-decay): flat, then a linear ramp down over the last decay_fraction of steps.
    decay_start = max(warmup, max_steps - round(optim.decay_fraction * max_steps))
    if step < decay_start:
        return 1.0
    progress = min(1.0, (step - decay_start) / max(1, max_steps - decay_start))
    return 1.0 - (1 - floor) * progress
