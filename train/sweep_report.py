"""A sweep's aggregate: results.csv (one row per run), summary.md (one table: rows are grid points,
columns an axis's values or several metrics, each cell the best value over the `best_of` axes, as
Zoology reports the best learning rate), and two plots: metric by variant, and metric vs cache
bytes per sequence."""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

from ..common import human_bytes

FIELDS_LAST = [
    "status",
    "step",
    "params",
    "state_bytes",
    "flops_per_token",
    "tokens_per_s",
    "wall_s",
    "message",
]


@dataclass
class Table:
    row_axes: list[str]
    row_keys: list[tuple]
    col_keys: list[str]
    col_titles: list[str]
    cells: dict  # (row key, col key) -> (value, run, state bytes)
    best_of: list[str]


def write_reports(results: list[dict], sweep, out_dir: Path) -> str:
    axes = list(sweep.grid)
    write_csv(results, axes, out_dir / "results.csv")
    table = best_table(results, sweep.summary, axes)
    summary = summary_markdown(table, sweep, results)
    (out_dir / "summary.md").write_text(summary)
    plot_metric_by_variant(table, out_dir / "metric_by_variant.png")
    plot_metric_vs_state(table, out_dir / "metric_vs_state.png")
    return summary


def write_csv(results: list[dict], axes: list[str], path: Path) -> None:
    metrics = sorted({k for r in results for k in r if k.startswith(("val/", "train/", "state_bytes@"))})
    fields = ["run", *axes, *metrics, *FIELDS_LAST]
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=fields, extrasaction="ignore")
        writer.writeheader()
        for r in results:
            writer.writerow({k: r.get(k, "") for k in fields})


def best_table(results: list[dict], summary, axes: list[str]) -> Table:
    free = [a for a in axes if a not in summary.best_of]
    if summary.metrics:  # columns are metrics (e.g. per-slice accuracies); every free axis is a row
        columns = None
        col_keys = list(summary.metrics)
        col_titles = col_keys
    else:
        columns = summary.columns or (free[-1] if len(free) > 1 else None)
        col_keys = list(dict.fromkeys(r[columns] for r in results)) if columns else [summary.metric]
        col_titles = [f"{columns}={c}" for c in col_keys] if columns else col_keys
    row_axes = summary.rows or [a for a in free if a != columns]
    sign = 1 if summary.mode == "max" else -1
    cells: dict = {}
    for r in results:
        if r.get("status") != "finished":
            continue
        rk = tuple(r[a] for a in row_axes)
        for ck in col_keys:
            if columns and r[columns] != ck:
                continue
            metric = ck if summary.metrics else summary.metric
            if metric not in r:
                continue
            if (rk, ck) not in cells or sign * r[metric] > sign * cells[(rk, ck)][0]:
                state = r.get(f"state_bytes@{metric.partition('@')[2]}", r.get("state_bytes"))
                cells[(rk, ck)] = (r[metric], r, state)
    row_keys = list(dict.fromkeys(tuple(r[a] for a in row_axes) for r in results))
    return Table(row_axes, row_keys, col_keys, col_titles, cells, list(summary.best_of))


def summary_markdown(table: Table, sweep, results: list[dict]) -> str:
    s = sweep.summary
    what = ", ".join(s.metrics) if s.metrics else s.metric
    how = "best" if s.mode == "max" else "lowest"
    how += f" over {', '.join(s.best_of)}" if s.best_of else ""
    head = [*table.row_axes, *table.col_titles, "params", "cache bytes/seq"]
    lines = [
        f"# {sweep.name}",
        "",
        f"Cells: {what} ({how}); cache bytes per sequence at each column's eval length.",
        "",
        "| " + " | ".join(head) + " |",
        "|" + "---|" * len(head),
    ]
    for rk in table.row_keys:
        found = [table.cells.get((rk, ck)) for ck in table.col_keys]
        texts = [cell_text(c, table.best_of) for c in found]
        params = next((f"{c[1]['params']:,}" for c in found if c), "—")
        states = list(dict.fromkeys(human_bytes(c[2]) for c in found if c and c[2] is not None))
        lines.append("| " + " | ".join([*map(str, rk), *texts, params, " / ".join(states) or "—"]) + " |")
    counts: dict[str, int] = {}
    for r in results:
        counts[r.get("status", "missing")] = counts.get(r.get("status", "missing"), 0) + 1
    wall = sum(r.get("wall_s", 0.0) for r in results)
    lines += ["", "Runs: " + ", ".join(f"{n} {k}" for k, n in sorted(counts.items())) + "; "]
    lines[-1] += f"summed run wall time {wall / 60:.1f} min."
    return "\n".join(lines) + "\n"


def cell_text(cell, best_of: list[str]) -> str:
    if cell is None:
        return "—"
    value, run, _ = cell
    text = f"{value:.3f}"
    if best_of:
        text += " (" + ", ".join(f"{a.split('.')[-1]} {run[a]}" for a in best_of) + ")"
    return text


def pyplot():
    import matplotlib

    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt

    return plt


def plot_metric_by_variant(table: Table, path: Path) -> None:
    plt = pyplot()
    n = len(table.col_keys)
    fig, panels = plt.subplots(1, n, figsize=(4.2 * n, 4.2), squeeze=False, sharey=True)
    for ax, ck, title in zip(panels[0], table.col_keys, table.col_titles, strict=True):
        keys = [rk for rk in table.row_keys if (rk, ck) in table.cells]
        ax.bar(range(len(keys)), [table.cells[(rk, ck)][0] for rk in keys], color="tab:blue")
        ax.set_xticks(
            range(len(keys)), [" / ".join(map(str, rk)) for rk in keys], rotation=60, ha="right", fontsize=8
        )
        ax.set_title(title, fontsize=9)
    panels[0][0].set_ylabel("metric")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_metric_vs_state(table: Table, path: Path) -> None:
    """One marker per first row axis value (e.g. the variant), one colour per column."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6.5, 4.5))
    groups = list(dict.fromkeys(rk[0] if rk else "" for rk in table.row_keys))
    markers = "osD^v<>pPX*h"
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for (rk, ck), (value, _, state) in table.cells.items():
        if state is None:
            continue
        g, c = groups.index(rk[0] if rk else ""), table.col_keys.index(ck)
        ax.scatter(state, value, marker=markers[g % len(markers)], color=colours[c % len(colours)], alpha=0.8)
    for g, name in enumerate(groups):
        ax.scatter([], [], marker=markers[g % len(markers)], color="gray", label=str(name))
    for c, title in enumerate(table.col_titles):
        ax.scatter([], [], marker="s", color=colours[c % len(colours)], label=title)
    ax.set_xscale("log")
    ax.set_xlabel("cache bytes per sequence at the eval length")
    ax.set_ylabel("metric")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
