"""spec.md from `attnlab bench spec` results (serve/spec_bench.py): the table, the decode-only
speeds, the models, and a short reading of the numbers."""

from __future__ import annotations

import statistics

SPECULATIVE = ("ngram", "draft")


def _rate(x) -> str:
    return "–" if x is None else f"{x:.0f}"


def _speedup(x) -> str:
    return "–" if x is None else f"{x:.2f}×"


def _accept(m: dict) -> str:
    return f"{100 * m['acceptance_rate']:.0f}% ({m['accepted_per_verification']:.2f})"


def _loss(x) -> str:
    return "–" if x is None else f"{x:.3f}"


def _where(cell: dict) -> str:
    return f"{cell['family']}/{cell['workload']}/b{cell['batch']}"


def _range(lo: float, hi: float, scale: float = 100, unit: str = "%") -> str:
    a, b = f"{scale * lo:.0f}", f"{scale * hi:.0f}"
    return f"{a}{unit}" if a == b else f"{a}–{b}{unit}"


def _mean(values) -> float | None:
    values = [v for v in values if v is not None]
    return statistics.mean(values) if values else None


def header(results: dict) -> list[str]:
    o, m = results["options"], results["machine"]
    t = o["train"]
    drafts = ", ".join(f"{f} → `{d.removeprefix('draft-')}`" for f, d in results["drafts"].items())
    shared = [f for f, d in results["drafts"].items() if f == "hybrid"]
    note = (
        " The hybrid (LLLF) has no 1-layer version of itself: its draft is the lightning one (`L`), the "
        "letter of 3 of its 4 layers."
        if shared
        else ""
    )
    return [
        "# Speculative decoding: acceptance and speedup over plain decoding",
        "",
        f"`attnlab bench spec` — k = {o['k']} drafts per request and step; greedy; {o['new_tokens']} new "
        f"tokens per request after a {o['prompt_len']}-token prompt; {o['prompts']} prompts per workload, "
        "decoded in groups of the batch size (batch 1: one after another), so every batch decodes the "
        f"same tokens; median of {o['repeats']} rounds after a warm-up, the modes taking turns "
        f"({m['threads']} thread(s), {m['cpu']}, {m['cpus']} cores; load average "
        f"{m['loadavg_before'][0]:.1f} before, {m['loadavg_after'][0]:.1f} after).",
        "",
        f"Targets: 4-layer byte-level LMs (width {t['hidden']}); drafts: 1-layer ones ({drafts}); all "
        f"trained on the same data — Python standard-library code, byte tokenizer — for the same steps.{note} "
        "Workloads: **code** — chunks of standard-library files no model trained on; **copy** — the eval "
        "suite's copy task (repeat a string of random words).",
        "",
    ]


def main_table(results: dict) -> list[str]:
    lines = [
        "Output tokens/s over the wall time of each group (prefill included); speedup over plain in the "
        "same family, workload and batch; acceptance = accepted / proposed drafts, with accepted drafts "
        "per verification in brackets.",
        "",
        "| family | workload | batch | plain tok/s | ngram tok/s | ngram speedup | ngram accept | draft tok/s "
        "| draft speedup | draft accept | outputs match |",
        "|---" * 11 + "|",
    ]
    for c in results["cells"]:
        match = all(c[mode]["outputs_match"] for mode in SPECULATIVE)
        lines.append(
            f"| {c['family']} | {c['workload']} | {c['batch']} | {_rate(c['plain']['tokens_per_s'])} | "
            + " | ".join(
                f"{_rate(c[m]['tokens_per_s'])} | {_speedup(c[m]['speedup'])} | {_accept(c[m])}"
                for m in SPECULATIVE
            )
            + f" | {'yes' if match else '**NO**'} |"
        )
    return lines + [""]


def _ms(x) -> str:
    return "–" if x is None else f"{1000 * x:.1f}"


def decode_table(results: dict) -> list[str]:
    lines = [
        "Decode only (each group's first token to its last): tokens/s with the speedup over plain, and "
        "the median time of one engine step (a speculative step proposes, then verifies k drafts per "
        "request in one forward) with its cost relative to a plain step.",
        "",
        "| family | workload | batch | plain tok/s | ngram tok/s | draft tok/s | plain ms/step "
        "| ngram ms/step | draft ms/step |",
        "|---" * 9 + "|",
    ]
    for c in results["cells"]:
        rates = " | ".join(
            f"{_rate(c[m]['decode_tokens_per_s'])} ({_speedup(c[m].get('decode_speedup'))})"
            for m in SPECULATIVE
        )
        steps = " | ".join(f"{_ms(c[m]['step_s'])} ({_speedup(c[m].get('step_cost'))})" for m in SPECULATIVE)
        lines.append(
            f"| {c['family']} | {c['workload']} | {c['batch']} | {_rate(c['plain']['decode_tokens_per_s'])} "
            f"| {rates} | {_ms(c['plain']['step_s'])} | {steps} |"
        )
    return lines + [""]


def models_table(results: dict) -> list[str]:
    lines = [
        "Models (final train loss: the last logged mean; val loss on the held-out rows; nats per byte):",
        "",
        "| model | layers | params | steps | train loss | val loss | trained |",
        "|---" * 7 + "|",
    ]
    for name, r in results["models"].items():
        params = "–" if r.get("params") is None else f"{r['params'] / 1e6:.2f}M"
        trained = "this run" if r.get("trained_now") else "reused"
        lines.append(
            f"| {name} | {r['layers']} | {params} | {r['steps']} | {_loss(r['train_loss'])} | "
            f"{_loss(r['val_loss'])} | {trained} |"
        )
    return lines + [""]


def reading(results: dict) -> list[str]:
    """A paragraph generated from the numbers."""
    cells, said = results["cells"], []
    wins = sorted(
        ((c[m]["speedup"], m, c) for c in cells for m in SPECULATIVE if c[m]["speedup"] > 1),
        key=lambda w: -w[0],
    )
    if wins:
        listed = ", ".join(f"{m} {x:.2f}× on {_where(c)}" for x, m, c in wins[:6])
        more = f" and {len(wins) - 6} more" if len(wins) > 6 else ""
        said.append(
            f"Speculation beats plain decoding in {len(wins)} of {2 * len(cells)} cases: {listed}{more}."
        )
    else:
        said.append("Speculation is slower than plain decoding in every cell.")
    workloads = list(dict.fromkeys(c["workload"] for c in cells))

    def accepted(mode: str) -> str:
        rates = [[c[mode]["acceptance_rate"] for c in cells if c["workload"] == w] for w in workloads]
        return " and ".join(f"{_range(min(r), max(r))} on {w}" for r, w in zip(rates, workloads, strict=True))

    said.append(f"Accepted drafts: n-gram lookup {accepted('ngram')}; the draft models {accepted('draft')}.")
    costs = []
    for family in dict.fromkeys(c["family"] for c in cells):
        mine = [c for c in cells if c["family"] == family]
        cost = {m: _mean(c[m].get("step_cost") for c in mine) for m in SPECULATIVE}
        tokens = _mean(1 + c["ngram"]["accepted_per_verification"] for c in mine)
        if cost["ngram"] is not None:
            costs.append(
                f"{family} {cost['ngram']:.1f}× (n-gram) and {cost['draft']:.1f}× (draft) for "
                f"{tokens:.1f} tokens per n-gram verification"
            )
    if costs:
        said.append(
            "What decides it is the price of a speculative step against a plain one (mean over the "
            f"family's cells): {'; '.join(costs)}. The step verifies k + 1 tokens per request in the "
            "prefill path, and the draft mode also runs the draft model k times."
        )
    batches = sorted({c["batch"] for c in cells})
    if len(batches) > 1:
        lo, hi = batches[0], batches[-1]
        parts = [
            f"{m} {_mean(c[m]['speedup'] for c in cells if c['batch'] == lo):.2f}× at batch {lo}, "
            f"{_mean(c[m]['speedup'] for c in cells if c['batch'] == hi):.2f}× at batch {hi}"
            for m in SPECULATIVE
        ]
        said.append("Mean speedup: " + "; ".join(parts) + ".")
    models = results["models"]
    close = [
        f"{target} {models[target]['val_loss']:.2f} vs {draft} {models[draft]['val_loss']:.2f}"
        for family, draft in results["drafts"].items()
        if (target := f"target-{family}") in models
        and None not in (models[target]["val_loss"], models[draft]["val_loss"])
        and models[draft]["val_loss"] <= models[target]["val_loss"] + 0.05
    ]
    if close:
        said.append(
            "The drafts are about as good as their targets after this much training (val loss "
            + "; ".join(close)
            + "), which helps their acceptance."
        )
    repeated = [c["repeated"] for c in cells]
    said.append(
        f"The targets' own greedy text loops: {_range(min(repeated), max(repeated))} of their output tokens "
        "complete a 4-gram seen earlier (per cell), which is what both proposers predict."
    )
    copied = [c["copied"] for c in cells if "copied" in c]
    if copied:
        said.append(
            f"On copy they reproduce {_range(min(copied), max(copied))} of the string before their first "
            "mistake, so prompt lookup is accepted there for their loops, not for copying."
            if max(copied) < 0.5
            else f"On copy they reproduce {_range(min(copied), max(copied))} of the string before their "
            "first mistake."
        )
    wrong = [(c, m) for c in cells for m in SPECULATIVE if not c[m]["outputs_match"]]
    if wrong:
        said.append(
            "**Speculative output differed from plain greedy** in "
            + ", ".join(f"{_where(c)} ({m})" for c, m in wrong)
            + " (results.json: `mismatches`)."
        )
    else:
        said.append("Greedy speculative output equalled plain decoding token for token in every cell.")
    spread = max(c[m]["spread"] for c in cells for m in ("plain", *SPECULATIVE))
    said.append(
        f"Repeats of one measurement spread by up to {100 * spread:.0f}% of their median (max − min) on this "
        "shared machine: read nearby speedups as ties."
    )
    return ["## What it says", "", " ".join(said), ""]


def markdown(results: dict) -> str:
    return "\n".join(
        header(results)
        + main_table(results)
        + decode_table(results)
        + models_table(results)
        + reading(results)
    )
