"""state_precision.md and state_precision.png from `attnlab bench state-precision` results."""

from __future__ import annotations

import math
import statistics
from pathlib import Path

METRICS = (("state_rel", "state rel. error"), ("kl", "KL(fp32 || format)"), ("max_abs", "max |Δ logit|"))
KL_OK = 1e-3  # "holds up": mean KL per token below this over the last half of the run


def _fmt(x) -> str:
    if x is None:
        return "–"
    if isinstance(x, float):
        return f"{x:.1e}" if x and (abs(x) < 0.01 or abs(x) >= 1000) else f"{x:.3g}"
    return str(x)


def _divergence(firsts: list) -> str:
    hit = [f for f in firsts if f is not None]
    if not hit:
        return "none"
    return f"{int(statistics.median(hit))} (min {min(hit)}; {len(hit)}/{len(firsts)} seqs)"


def recommend(results: dict) -> str:
    """The smallest storage whose KL stays under KL_OK at the last step on every model and whose
    MQAR accuracy is within 2 points of fp32 everywhere (fp32 when none qualifies)."""
    formats = results["options"]["formats"]
    steps = str(results["options"]["steps"])
    ok = []
    for f in formats:
        kls = [m["summary"][f]["at"].get(steps, {}).get("kl", math.inf) for m in results["decode"].values()]
        acc_gap = [
            row["fp32"] - row[f] for rows in results["mqar"].values() for row in rows if "skipped" not in row
        ]
        if all(k < KL_OK for k in kls) and all(g <= 0.02 for g in acc_gap):
            size = min(m["state_bytes_per_seq"][f] for m in results["decode"].values())
            ok.append((size, f))
    return min(ok)[1] if ok else "fp32"


def markdown(results: dict) -> str:
    o = results["options"]
    steps = o["steps"]
    shown = [t for t in (1024, 4096, 16384) if t <= steps] or [steps]
    lines = [
        "# Low-precision lightning state: error growth over decoding",
        "",
        f"`attnlab bench state-precision --steps {steps}` — {o['sequences']} text streams per model "
        f"(the local corpus), prefill {o['prefill']} tokens, then {steps} decode steps teacher-forced "
        "through the engine's slots in lockstep with an fp32 run. Errors are means over the window "
        "(t/2, t] ending at each step t; 'first divergence' is the first decode step whose greedy "
        "token differs from fp32's (median over sequences).",
        "",
    ]
    for name, m in results["decode"].items():
        fp32_bytes = m["state_bytes_per_seq"]["fp32"]
        lines += [
            f"## {name} (layers {m['layers']})",
            "",
            "| storage | cache bytes/seq | vs fp32 | decode tok/s | "
            + " | ".join(f"state err @{t}" for t in shown)
            + " | "
            + " | ".join(f"KL @{t}" for t in shown)
            + f" | max Δlogit @{shown[-1]} | first divergence |",
            "|---" * (6 + 2 * len(shown)) + "|",
            f"| fp32 | {fp32_bytes:,} | 1.00 | {m['tokens_per_s']['fp32']:.0f} | "
            + " | ".join("0" for _ in shown) * 1
            + " | "
            + " | ".join("0" for _ in shown)
            + " | 0 | – |",
        ]
        for f, s in m["summary"].items():
            at = s["at"]
            b = m["state_bytes_per_seq"][f]
            lines.append(
                f"| {f} | {b:,} | {b / fp32_bytes:.2f} | {m['tokens_per_s'][f]:.0f} | "
                + " | ".join(_fmt(at.get(str(t), {}).get("state_rel")) for t in shown)
                + " | "
                + " | ".join(_fmt(at.get(str(t), {}).get("kl")) for t in shown)
                + f" | {_fmt(at.get(str(shown[-1]), {}).get('max_abs'))} | {_divergence(s['first_divergence'])} |"
            )
        lines.append("")
    for name, rows in results["mqar"].items():
        formats = ["fp32", *o["formats"]]
        lines += [
            f"## MQAR chain accuracy, {name} (every token fed as a decode, state stored each step)",
            "",
            "| length | hops | " + " | ".join(formats) + " |",
            "|---" * (2 + len(formats)) + "|",
        ]
        for row in rows:
            if "skipped" in row:
                lines.append(f"| {row['length']} | {row['hops']} | skipped: {row['skipped']} |")
                continue
            lines.append(
                f"| {row['length']} | {row['hops']} | "
                + " | ".join(f"{100 * row[f]:.1f}" for f in formats)
                + " |"
            )
        lines.append("")
    lines += [
        f"**Recommended storage**: `{recommend(results)}` — the smallest whose mean KL stays below "
        f"{KL_OK:g} at step {steps} on every model and whose MQAR accuracy is within 2 points of fp32.",
        "",
        "![error growth](state_precision.png)",
        "",
    ]
    return "\n".join(lines)


def geometric_bins(n: int, per_octave: int = 4) -> list[tuple[int, int]]:
    """[lo, hi) index ranges covering 0..n, growing geometrically (for log-x plots); a last bin
    narrower than half the one before joins it (a sliver of a bin is a noisy point)."""
    octaves = int(math.log2(max(n, 1)) * per_octave) + 1
    edges = sorted({0, n, *(min(n, round(2 ** (i / per_octave))) for i in range(octaves))})
    bins = [(a, b) for a, b in zip(edges[:-1], edges[1:], strict=True) if b > a]
    if len(bins) > 1 and (bins[-1][1] - bins[-1][0]) * 2 < bins[-2][1] - bins[-2][0]:
        bins[-2:] = [(bins[-2][0], bins[-1][1])]
    return bins


def plot(curves: dict, path: Path) -> None:
    """One row per model, one panel per metric; x: decode step, y: error; log-log, geometric bins."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from .state_precision import nanmean

    models = list(curves)
    fig, axes = plt.subplots(len(models), 3, figsize=(15, 4 * len(models)), squeeze=False)
    for r, model in enumerate(models):
        for c, (key, title) in enumerate(METRICS):
            ax = axes[r][c]
            for fmt, curve in curves[model].items():
                values = curve[key]
                xs, ys = [], []
                for lo, hi in geometric_bins(len(values)):
                    mean = nanmean(values[lo:hi])
                    if mean > 0:  # NaN (no sample in the bin) and exact zeros have no log
                        xs.append(hi)
                        ys.append(mean)
                ax.plot(xs, ys, label=fmt, linestyle="--" if fmt.endswith("+sr") else "-")
            ax.set_xscale("log")
            ax.set_yscale("log")
            ax.set_title(f"{model}: {title}")
            ax.set_xlabel("decode step")
            ax.grid(True, which="both", alpha=0.3)
    axes[0][0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
