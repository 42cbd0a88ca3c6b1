"""The markdown report of an eval run: one row per (task, hops, model), one column per length."""

from __future__ import annotations


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
    lines += ["", "| model | path | seconds |", "|---|---|---|"]
    lines += [f"| {m['name']} | `{m['path']}` | {m['seconds']} |" for m in report["models"]]
    return "\n".join(lines) + "\n"
