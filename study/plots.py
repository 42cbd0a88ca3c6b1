"""The study's own figures, drawn from the probe stage's scores.json files: every variant's head
scores side by side, and the ablation drops (top-k heads vs random heads) per variant."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def probe_grid(scores: dict[str, dict], probes: list[str], path: Path) -> None:
    """scores: variant -> scores.json content. One heatmap per (probe, variant): layers x heads."""
    variants = list(scores)
    fig, axes = plt.subplots(
        len(probes), len(variants), figsize=(1.6 * len(variants) + 1, 2.2 * len(probes)), squeeze=False
    )
    for r, probe in enumerate(probes):
        for c, variant in enumerate(variants):
            ax = axes[r][c]
            result = scores[variant]["probes"].get(probe)
            if result is None:
                ax.axis("off")
                continue
            rows = result["scores"]
            width = max(len(row) for row in rows)
            grid = [row + [float("nan")] * (width - len(row)) for row in rows]
            image = ax.imshow(grid, vmin=0, vmax=1, cmap="viridis", aspect="auto")
            ax.set_xticks(range(width))
            ax.set_yticks(range(len(rows)))
            ax.tick_params(labelsize=6)
            if r == 0:
                ax.set_title(variant, fontsize=8)
            if c == 0:
                ax.set_ylabel(f"{probe}\nlayer", fontsize=8)
            if r == len(probes) - 1:
                ax.set_xlabel("head", fontsize=8)
    fig.colorbar(image, ax=axes, shrink=0.8, label="score")
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)


def ablation_bars(scores: dict[str, dict], path: Path) -> None:
    """Accuracy with no heads masked, the top k masked and k random masked, per variant."""
    rows = [(v, s["ablation"]) for v, s in scores.items() if s.get("ablation")]
    if not rows:
        return
    fig, ax = plt.subplots(figsize=(1.1 * len(rows) + 2, 3.2))
    width = 0.27
    for i, (label, key) in enumerate(
        (
            ("none masked", "baseline_accuracy"),
            ("top k masked", "top_accuracy"),
            ("k random", "random_accuracy_mean"),
        )
    ):
        ax.bar([x + (i - 1) * width for x in range(len(rows))], [a[key] for _, a in rows], width, label=label)
    ax.set_xticks(range(len(rows)))
    ax.set_xticklabels([v for v, _ in rows], rotation=30, ha="right", fontsize=8)
    ax.set_ylabel("task accuracy")
    ax.set_ylim(0, 1.05)
    ax.legend(fontsize=7)
    ax.set_title(
        f"Masking the top {rows[0][1]['k']} heads by {rows[0][1]['probe']} vs {rows[0][1]['k']} random heads",
        fontsize=9,
    )
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
