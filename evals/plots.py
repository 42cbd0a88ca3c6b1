"""PNG plots of an eval run (matplotlib, Agg backend: no display needed).

accuracy_vs_length.png: one panel per (task, hops), accuracy vs context length, one line per model
                        (per variant when the models are seeds: the mean, with a min-max band)
heatmap.png:            one panel per model, (task, hops) rows x length columns
"""

from __future__ import annotations

import math
from pathlib import Path

from .markdown_report import across_seeds, grid, length_label


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def line_series(report: dict, task: str, hops: int, seeds: list[dict] | None = None) -> list[tuple]:
    """-> [(label, lengths, scores %, (min %, max %) or None)] for one panel: one per model, or one
    per variant (mean over its seeds, with the seeds' range) when the models are seed groups.
    `seeds`: across_seeds(report), when the caller already has it."""
    seeds = across_seeds(report) if seeds is None else seeds
    if seeds:
        out = []
        for variant in dict.fromkeys(r["variant"] for r in seeds):
            rows = [r for r in seeds if (r["task"], r["hops"], r["variant"]) == (task, hops, variant)]
            if rows:
                mean, lo, hi = ([100 * r[key] for r in rows] for key in ("mean", "min", "max"))
                out.append((variant, [r["length"] for r in rows], mean, (lo, hi)))
        return out
    lengths, _, cells = grid(report)
    out = []
    for model in report["models"]:
        points = [
            (n, 100 * c["score"])
            for n in lengths
            if (c := cells.get((model["name"], task, hops, n))) is not None and c["score"] is not None
        ]
        if points:
            xs, ys = zip(*points, strict=True)
            out.append((model["name"], list(xs), list(ys), None))
    return out


def plot_lines(report: dict, path: Path) -> None:
    plt = _pyplot()
    lengths, rows, _ = grid(report)
    cols = min(3, max(len(rows), 1))
    nrows = max(1, math.ceil(len(rows) / cols))
    fig, axes = plt.subplots(nrows, cols, figsize=(4.2 * cols, 3.2 * nrows), squeeze=False)
    seeds = across_seeds(report)
    for ax, (task, hops) in zip(axes.flat, rows, strict=False):  # spare panels stay empty
        for label, xs, ys, band in line_series(report, task, hops, seeds):
            (line,) = ax.plot(xs, ys, marker="o", label=label)
            if band is not None:
                ax.fill_between(xs, *band, color=line.get_color(), alpha=0.15, linewidth=0)
        ax.set_xscale("log", base=2)
        ax.set_xlim(lengths[0] / 1.3, lengths[-1] * 1.3)  # same axis in every panel, even empty ones
        ax.set_xticks(lengths, [length_label(n) for n in lengths])
        ax.minorticks_off()
        ax.set_ylim(-5, 105)
        ax.set_title(f"{task}, hops={hops}", fontsize=10)
        ax.set_xlabel("context length (tokens)")
        ax.set_ylabel("accuracy (%)")
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(rows) :]:
        ax.axis("off")
    handles, labels = axes.flat[0].get_legend_handles_labels()
    if handles:
        # entries above the panels, up to 6 per row (bbox_inches="tight" keeps them in the file)
        fig.legend(
            handles,
            labels,
            loc="lower center",
            bbox_to_anchor=(0.5, 1.0),
            ncol=min(len(labels), 6),
            frameon=False,
        )
    fig.tight_layout()
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)


def plot_heatmaps(report: dict, path: Path) -> None:
    plt = _pyplot()
    lengths, rows, cells = grid(report)
    models = report["models"]
    fig, axes = plt.subplots(
        1, len(models), figsize=(1.1 * len(lengths) + 3, 0.45 * len(rows) + 1.8), squeeze=False
    )
    for ax, model in zip(axes.flat, models, strict=True):
        values = [
            [
                math.nan
                if (c := cells.get((model["name"], t, h, n))) is None or c["score"] is None
                else 100 * c["score"]
                for n in lengths
            ]
            for t, h in rows
        ]
        image = ax.imshow(values, vmin=0, vmax=100, cmap="viridis", aspect="auto")
        ax.set_xticks(range(len(lengths)), [length_label(n) for n in lengths])
        ax.set_yticks(range(len(rows)), [f"{t} h{h}" for t, h in rows])
        ax.set_title(model["name"], fontsize=10)
        for i, row in enumerate(values):
            for j, v in enumerate(row):
                if not math.isnan(v):
                    ax.text(
                        j,
                        i,
                        f"{v:.0f}",
                        ha="center",
                        va="center",
                        fontsize=7,
                        color="white" if v < 60 else "black",
                    )
    fig.colorbar(image, ax=list(axes.flat), label="accuracy (%)")
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
