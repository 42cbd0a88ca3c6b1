"""Figures: one layers × heads heatmap per probe, and the ablation comparison (matplotlib, Agg)."""

from __future__ import annotations

import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only; no display on servers
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from .ablation import AblationResult  # noqa: E402
from .probe import ProbeResult  # noqa: E402


def heatmap(result: ProbeResult, path: Path, title: str) -> Path:
    """Scores [layer][head] as an image; layers with fewer heads are padded with blanks (NaN)."""
    width = max(len(row) for row in result.scores)
    grid = np.full((len(result.scores), width), np.nan)
    for l, row in enumerate(result.scores):
        grid[l, : len(row)] = row
    fig, ax = plt.subplots(figsize=(1.2 + 0.45 * width, 1.0 + 0.4 * len(grid)))
    finite = grid[np.isfinite(grid)]
    # Softmax scores live in [0, 1]; a signed lightning map can leave it, so widen only then.
    lo = min(0.0, float(finite.min())) if finite.size else 0.0
    hi = max(1.0, float(finite.max())) if finite.size else 1.0
    image = ax.imshow(grid, cmap="viridis", vmin=lo, vmax=hi, aspect="auto", interpolation="nearest")
    for (l, h), value in np.ndenumerate(grid):
        if width <= 16 and len(grid) <= 32 and not math.isnan(value):
            ax.text(
                h, l, f"{value:.2f}", ha="center", va="center", fontsize=7, color="w" if value < 0.6 else "k"
            )
    ax.set_xlabel("head")
    ax.set_ylabel("layer")
    ax.set_title(title, fontsize=9)
    fig.colorbar(image, ax=ax, fraction=0.046)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def ablation_plot(ablation: AblationResult, path: Path) -> Path:
    """Bars: baseline, top-k masked, random-k masked (mean, with each draw as a dot)."""
    fig, ax = plt.subplots(figsize=(4.2, 3.2))
    labels = ["no mask", f"top {ablation.k}", f"random {ablation.k}"]
    values = [ablation.baseline, ablation.top_accuracy, ablation.random_mean]
    ax.bar(labels, values, color=["#888888", "#d62728", "#1f77b4"])
    ax.scatter([2] * len(ablation.random_accuracies), ablation.random_accuracies, color="k", s=12, zorder=3)
    ax.set_ylim(0, 1.05)
    ax.set_ylabel("accuracy")
    ax.set_title(f"{ablation.probe} heads, {ablation.mode} masking", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
