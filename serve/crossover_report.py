"""The crossover benchmark's outputs: crossover lengths, `results.json`, `crossover.md`,
`crossover.png` (serve/crossover.py measures)."""

from __future__ import annotations

import json
import math
from pathlib import Path

from ..kernels import describe_kernels, kernel_record

# metric -> (title, how to read it from a point); None when the point was not measured.
METRICS = {
    "prefill_s": ("prefill (s)", lambda p: _get(p, "prefill", "prefill_s")),
    "e2e_s": ("request end to end (s)", lambda p: _get(p, "prefill", "e2e_s")),
    "decode_b1_s": ("decode step, batch 1 (s)", lambda p: _get(p, "decode_b1", "median")),
    "decode_bN_s": ("decode step, batch N (s)", lambda p: _get(p, "decode_bN", "median")),
    "cache_bytes_per_seq": (
        "cache bytes / sequence",
        lambda p: p.get("cache_bytes_per_seq") or p["state_bytes"],
    ),
    "seqs_in_budget": ("sequences in the budget", lambda p: p["seqs_in_budget"] or None),
}
HIGHER_IS_BETTER = {"seqs_in_budget"}


def _get(point: dict, key: str, field: str):
    value = point.get(key)
    return value.get(field) if isinstance(value, dict) else None


def crossover(lengths: list[int], ours: list[float | None], full: list[float | None],
              higher_is_better: bool = False) -> dict:  # fmt: skip
    """The length from which on `ours` stays cheaper than `full` at every longer measured length:
    interpolated in log-length, on the log of the ratio, between the last measured length where
    it is not cheaper and the next. (The last crossing, not the first: a single noisy short
    length where a family happens to win does not make a crossover.) A length where full
    attention could not run (None) while ours did counts as cheaper. -> {"length", "note"}."""
    measured = []  # (length, log ratio or None when full attention could not run)
    for length, a, b in zip(lengths, ours, full, strict=True):
        if a is None:
            continue
        ratio = None if b is None else (b / a if higher_is_better else a / b)  # < 1: ours is cheaper
        measured.append((length, None if ratio is None else math.log(ratio)))
    if not measured:
        return {"length": None, "note": "not measured"}
    last_not = max((i for i, (_, r) in enumerate(measured) if r is not None and r >= 0), default=None)
    if last_not is None:
        n = measured[0][0]
        return {"length": float(n), "note": f"cheaper from the first length measured ({n})"}
    if last_not == len(measured) - 1:
        return {"length": None, "note": f"none up to {measured[-1][0]}"}
    (l0, r0), (l1, r1) = measured[last_not], measured[last_not + 1]
    if r1 is None:
        return {"length": float(l1), "note": "full attention could not run here"}
    t = r0 / (r0 - r1)
    return {"length": math.exp(math.log(l0) + t * (math.log(l1) - math.log(l0))), "note": "interpolated"}


def series(results: dict, family: str, metric: str) -> tuple[list[int], list]:
    pts = [p for p in results["points"] if p["family"] == family]
    return [p["length"] for p in pts], [METRICS[metric][1](p) for p in pts]


def crossovers(results: dict) -> dict:
    families = list(dict.fromkeys(p["family"] for p in results["points"]))
    if "full" not in families:
        return {}
    out = {}
    for family in families:
        if family == "full":
            continue
        out[family] = {}
        for metric in METRICS:
            lengths, ours = series(results, family, metric)
            _, full = series(results, "full", metric)
            out[family][metric] = crossover(lengths, ours, full, metric in HIGHER_IS_BETTER)
    return out


def write_outputs(results: dict, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    results["crossovers"] = crossovers(results)
    results["kernels"] = kernel_record()
    tmp = out / "results.json.tmp"
    tmp.write_text(json.dumps(results, indent=2))
    tmp.replace(out / "results.json")
    (out / "crossover.md").write_text(markdown(results) + f"\n{describe_kernels(results['kernels'])}\n")
    plot(results, out / "crossover.png")


def _fmt(metric: str, value) -> str:
    if value is None:
        return "-"
    if metric.endswith("_s"):
        return f"{value * 1000:.1f} ms" if value < 1 else f"{value:.2f} s"
    if metric == "cache_bytes_per_seq":
        for unit, size in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
            if value >= size:
                return f"{value / size:.1f} {unit}"
        return f"{value} B"
    return f"{value:,}"


# metric -> (the point's entry holding it, the prefix of its min/max fields)
_SPREAD = {
    "prefill_s": ("prefill", "prefill_"),
    "e2e_s": ("prefill", "e2e_"),
    "decode_b1_s": ("decode_b1", ""),
    "decode_bN_s": ("decode_bN", ""),
}


def _cell(point: dict, metric: str) -> str:
    """A value with its spread (± half the min-max range, in % of the median), or why it is missing."""
    value = METRICS[metric][1](point)
    key, prefix = _SPREAD.get(metric, (None, ""))
    if value is not None:
        if key is None:
            return _fmt(metric, value)
        entry = point[key]
        spread = 50 * (entry[f"{prefix}max"] - entry[f"{prefix}min"]) / value
        return f"{_fmt(metric, value)} ±{spread:.0f}%"
    status = point.get(key) if key else None
    return "oom" if isinstance(status, str) and status.startswith("oom") else ("skipped" if status else "-")


def markdown(results: dict) -> str:
    o, m = results["options"], results["machine"]
    families = list(dict.fromkeys(p["family"] for p in results["points"]))
    lengths = sorted({p["length"] for p in results["points"]})
    lines = [
        f"# Crossover benchmark ({m['device']}, {m['processor']}, {m['threads']} threads)",
        "",
        (
            f"Saved models ({', '.join(f'{k} `{v}`' for k, v in o['models'].items())}), fp32; "
            if o.get("models")
            else f"d {o['hidden']}, {o['layers']} layers, {o['heads']} heads, vocab 256, fp32, random weights; SWA "
            f"window {o['window']}; "
        )
        + f"larger decode batch N = {o['batch']}; end to end = prefill + {o['new_tokens']} tokens; "
        f"sequences in a {o['memory_budget'] / 2**30:g} GiB budget. Measured copy bandwidth "
        f"{m['memory_bandwidth_bytes_per_s'] / 1e9:.1f} GB/s, matmul {m['matmul_flops_per_s'] / 1e9:.1f} GFLOP/s. "
        "Times are medians, ± half the min-max range over the repeats (prefill) or timed steps (decode).",
        "",
        "Layouts: " + ", ".join(f"{f} `{results['layouts'][f]}`" for f in families),
        "",
        "## Crossover lengths (shortest context at which the family is cheaper than full attention)",
        "",
        "| family | " + " | ".join(METRICS[k][0] for k in METRICS) + " |",
        "|---|" + "---|" * len(METRICS),
    ]
    for family, row in results.get("crossovers", {}).items():
        cells = []
        for metric in METRICS:
            c = row[metric]
            cells.append(c["note"] if c["length"] is None else (
                f"{c['length']:,.0f}" + ("" if c["note"] == "interpolated" else f" ({c['note']})")))  # fmt: skip
        lines.append(f"| {family} | " + " | ".join(cells) + " |")
    for metric in METRICS:
        lines += ["", f"## {METRICS[metric][0]}", "", "| family | " + " | ".join(f"{n:,}" for n in lengths) + " |",
                  "|---|" + "---|" * len(lengths)]  # fmt: skip
        for family in families:
            pts = {p["length"]: p for p in results["points"] if p["family"] == family}
            lines.append(
                f"| {family} | "
                + " | ".join(_cell(pts[n], metric) if n in pts else "-" for n in lengths)
                + " |"
            )
    lines += ["", "## Measured / roofline at the longest length measured", "",
              "| family | length | prefill | decode b1 | decode bN |", "|---|---|---|---|---|"]  # fmt: skip
    for family in families:
        pts = [p for p in results["points"] if p["family"] == family]
        cells = []
        for key, field in (("prefill", "prefill_s"), ("decode_b1", "median"), ("decode_bN", "median")):
            done = [p for p in pts if isinstance(p.get(key), dict)]
            if done:
                p = done[-1]
                cells.append(f"{p[key][field] / p[key]['roofline_s']:.1f}x at {p['length']:,}")
            else:
                cells.append("-")
        lines.append(f"| {family} | {pts[-1]['length']:,} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def plot(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    families = list(dict.fromkeys(p["family"] for p in results["points"]))
    shown = ["prefill_s", "decode_b1_s", "decode_bN_s", "cache_bytes_per_seq"]
    fig, axes = plt.subplots(1, len(shown), figsize=(5 * len(shown), 4.2))
    for ax, metric in zip(axes, shown, strict=True):
        for family in families:
            lengths, values = series(results, family, metric)
            xy = [(n, v) for n, v in zip(lengths, values, strict=True) if v is not None]
            if not xy:
                continue
            (line,) = ax.plot(*zip(*xy, strict=True), marker="o", ms=3, label=family)
            c = results.get("crossovers", {}).get(family, {}).get(metric)
            if c and c["length"] is not None:
                at = min(xy, key=lambda q: abs(math.log(q[0]) - math.log(c["length"])))
                ax.plot([c["length"]], [at[1]], marker="X", ms=10, color=line.get_color(), mec="black")
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlabel("context length (tokens)")
        ax.set_title(METRICS[metric][0])
        ax.grid(True, which="both", alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.suptitle("Where each family becomes cheaper than full attention (X: crossover)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
