"""The markdown report of an eval run: one row per (task, hops, model), one column per length; when
the models are a sweep's seeds (names differing only by `_seed=N`), also one row per (task, hops,
variant) with the mean over seeds and each seed's value."""

from __future__ import annotations

import re

from ..kernels import describe_kernels

SEED_SUFFIX = re.compile(r"_seed=(\d+)$")  # a sweep's seed axis in a run name (train/sweep.py run_name)


def length_label(length: int) -> str:
    return f"{length // 1024}k" if length % 1024 == 0 else str(length)


def grid(report: dict) -> tuple[list[int], list[tuple[str, int]], dict]:
    """-> lengths, (task, hops) rows in suite order, {(model, task, hops, length): cell}."""
    cells = {}
    rows: list[tuple[str, int]] = []
    lengths: set[int] = set()
    for model in report["models"]:
        for c in model["cells"]:
            cells[(model["name"], c["task"], c["hops"], c["length"])] = c
            lengths.add(c["length"])
            if (c["task"], c["hops"]) not in rows:
                rows.append((c["task"], c["hops"]))
    return sorted(lengths), rows, cells


def seed_groups(report: dict) -> dict[str, list[str]]:
    """{variant: [model names]} for models whose names differ only by a trailing `_seed=N`, in
    order; {} unless some variant has two or more seeds."""
    groups: dict[str, list[str]] = {}
    for model in report["models"]:
        groups.setdefault(SEED_SUFFIX.sub("", model["name"]), []).append(model["name"])
    return groups if any(len(names) > 1 for names in groups.values()) else {}


def across_seeds(report: dict) -> list[dict]:
    """One row per (task, hops, length, variant) over its seeds' scored cells: mean, min, max and
    the per-seed scores (in model order). [] when the models are not seed groups."""
    groups = seed_groups(report)
    lengths, rows, cells = grid(report)
    out = []
    for task, hops in rows:
        for length in lengths:
            for variant, names in groups.items():
                scores = [
                    c["score"]
                    for name in names
                    if (c := cells.get((name, task, hops, length))) is not None and c["score"] is not None
                ]
                if scores:
                    out.append(
                        {"task": task, "hops": hops, "length": length, "variant": variant, "seeds": len(scores),
                         "mean": sum(scores) / len(scores), "min": min(scores), "max": max(scores),
                         "scores": scores}
                    )  # fmt: skip
    return out


def seeds_table(report: dict) -> list[str]:
    rows = across_seeds(report)
    if not rows:
        return []
    lengths = sorted({r["length"] for r in rows})
    by_key = {(r["task"], r["hops"], r["variant"], r["length"]): r for r in rows}
    lines = [
        "",
        "Across seeds: mean, then each seed's score (in %); one value when the seeds agree within 1 point.",
        "",
        "| task | hops | variant | seeds | " + " | ".join(length_label(n) for n in lengths) + " |",
        "|---|---|---|---|" + "---|" * len(lengths),
    ]
    keys = dict.fromkeys((r["task"], r["hops"], r["variant"]) for r in rows)
    for task, hops, variant in keys:
        values = []
        for n in lengths:
            r = by_key.get((task, hops, variant, n))
            if r is None:
                values.append("–")
            elif 100 * (r["max"] - r["min"]) < 1:
                values.append(f"{100 * r['mean']:.1f}")
            else:
                values.append(f"{100 * r['mean']:.1f} ({' / '.join(f'{100 * x:.0f}' for x in r['scores'])})")
        seeds = max(
            by_key[(task, hops, variant, n)]["seeds"] for n in lengths if (task, hops, variant, n) in by_key
        )
        lines.append(f"| {task} | {hops} | {variant} | {seeds} | " + " | ".join(values) + " |")
    return lines


def skip_lines(model: dict) -> list[str]:
    """Why a model's cells were skipped, one line per reason: 'full: 8 cells skipped (...): reason'."""
    reasons: dict[str, list[dict]] = {}
    for c in model["cells"]:
        if c.get("skipped"):
            reasons.setdefault(c["skipped"], []).append(c)
    lines = []
    for reason, cells in reasons.items():
        tasks = ", ".join(dict.fromkeys(c["task"] for c in cells))
        lines.append(f"{model['name']}: {len(cells)} cell(s) skipped ({tasks}): {reason}")
    return lines


def markdown_report(report: dict) -> str:
    spec = report["suite"]
    lengths, rows, cells = grid(report)
    names = [m["name"] for m in report["models"]]
    lines = [
        f"# attnlab eval: suite `{spec['suite']}`",
        "",
        f"{spec['samples']} samples per cell, seed {spec['seed']}. Score in %: RULER string_match_all for "
        "text tasks; for mqar, chains with every link right under teacher forcing (= greedy decoding of the "
        "chain). '–' = cell skipped "
        "(prompt longer than the length, or the vocabulary cannot hold it); see eval.json.",
        "",
        "| task | hops | model | " + " | ".join(length_label(n) for n in lengths) + " |",
        "|---|---|---|" + "---|" * len(lengths),
    ]
    for task, hops in rows:
        for name in names:
            values = []
            for n in lengths:
                cell = cells.get((name, task, hops, n))
                values.append("–" if cell is None or cell["score"] is None else f"{100 * cell['score']:.1f}")
            lines.append(f"| {task} | {hops} | {name} | " + " | ".join(values) + " |")
    skipped = [line for m in report["models"] for line in skip_lines(m)]
    if skipped:
        lines += ["", "Skipped cells:", ""] + [f"- {line}" for line in skipped]
    lines += seeds_table(report)
    lines += ["", "| model | path | seconds |", "|---|---|---|"]
    lines += [f"| {m['name']} | `{m['path']}` | {m['seconds']} |" for m in report["models"]]
    lines += [""] + [f"- {m['name']}: {describe_kernels(m.get('kernels'))}" for m in report["models"]]
    return "\n".join(lines) + "\n"
