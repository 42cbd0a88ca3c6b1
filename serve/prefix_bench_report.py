"""The prefix caching benchmark's outputs: `results.json` and `prefix.md` (serve/prefix_bench.py
measures)."""

from __future__ import annotations

import json
from pathlib import Path

from ..kernels import describe_kernels

TITLES = {"chat": "Multi-turn chat", "few-shot": "Few-shot"}
COLUMNS = [
    "family", "config", "hit rate", "TTFT p50", "TTFT mean", "tok/s", "out tok/s", "speedup vs off",
    "CPU-time speedup", "held MiB peak / end", "checkpoints", "evictions", "preemptions",
]  # fmt: skip
MIB = 2**20


def write_outputs(results: dict, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    tmp = out / "results.json.tmp"
    tmp.write_text(json.dumps(results, indent=2))
    tmp.replace(out / "results.json")
    (out / "prefix.md").write_text(markdown(results) + f"\n{describe_kernels(results['kernels'])}\n")


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:.0f} ms" if seconds < 10 else f"{seconds:.1f} s"


def _pct(x: float) -> str:
    return f"{100 * x:.1f}%"


def _name(run: dict) -> str:
    return f"{run['family']}/{run['config']}"


def cells(run: dict) -> list[str]:
    """One table row, in COLUMNS order."""
    return [
        run["family"],
        run["config"],
        _pct(run["hit_rate"]),
        _ms(run["ttft_p50_s"]),
        _ms(run["ttft_mean_s"]),
        f"{run['tokens_per_s']:,.0f}",
        f"{run['output_tokens_per_s']:,.1f}",
        f"{run['speedup_vs_off']:.2f}x",
        f"{run['cpu_speedup_vs_off']:.2f}x",
        f"{run['held_bytes_peak'] / MIB:.1f} / {run['held_bytes_end'] / MIB:.1f}",
        str(run["checkpoints_end"]),
        str(run["evictions"]),
        str(run["preemptions"]),
    ]


def _workload_line(name: str, o: dict, w: dict) -> str:
    if name == "chat":
        turns = w["turns"]
        return (
            f"{len(turns)} conversations of {min(turns)}-{max(turns)} turns ({w['requests']} requests in "
            f"{w['rounds']} rounds: every conversation's next turn at once, the next round when all have "
            f"finished); system prompt {o['system_len']} tokens, user messages {o['user_len']}, "
            f"{o['new_tokens']} output tokens per turn; the longest conversation {w['longest']} tokens."
        )
    return (
        f"A prefix of {o['shots']} examples ({w['prefix_tokens']} tokens), then {w['requests']} requests "
        f"of prefix + a {o['user_len']}-token question, {o['new_tokens']} output tokens each, in waves of "
        f"{o['wave']} ({w['rounds']} waves, each after the previous finished)."
    )


def markdown(results: dict) -> str:
    lines = _preamble(results)
    for name, w in results["workloads"].items():
        runs = [r for r in results["runs"] if r["workload"] == name]
        budgets = ", ".join(
            f"{family} {b['budget_bytes'] / MIB:.1f} MiB (of {b['prefix_footprint_bytes'] / MIB:.1f})"
            for family, b in ((f, per[name]) for f, per in results["budgets"].items())
        )
        lines += [
            "",
            f"## {TITLES.get(name, name)}",
            "",
            _workload_line(name, results["options"], w),
            f"Cache budgets (of the prefix footprint): {budgets}.",
            "",
            "| " + " | ".join(COLUMNS) + " |",
            "|---|---|" + "---:|" * (len(COLUMNS) - 2),
            *("| " + " | ".join(cells(r)) + " |" for r in runs),
            "",
            "What it says:",
            "",
            *(f"- {s}" for s in findings(runs)),
        ]
    return "\n".join(lines) + "\n"


def _preamble(results: dict) -> list[str]:
    o, m = results["options"], results["machine"]
    if o["cache_memory"]:
        budget = f"{o['cache_memory'] / MIB:.1f} MiB for every run"
    else:
        budget = (
            f"per family and workload, {o['cache_fraction']:g} of what caching every prefix would take "
            "(each distinct token's cache, and for recurrent layers two state checkpoints per request), but "
            "at least the running batch at the longest sequence"
        )
    return [
        f"# Prefix caching benchmark ({m['cpu']}, {m['threads']} threads)",
        "",
        f"d {o['hidden']}, {o['layers']} layers, {o['heads']} heads, vocab 256, fp32, random weights; block "
        f"{o['block_size']} tokens, at most {o['max_num_seqs']} requests running at once; greedy, fixed "
        "output length. Configs: `off` no prefix caching; `cost` prefix caching, eviction by recency + FLOPs "
        "saved per byte; `lru` least recently used; `interval` cost, with state checkpoints every "
        f"{o['interval']} tokens instead of where they pay. Cache budget: {budget}.",
        "",
        "Hit rate = cached prompt tokens / prompt tokens; TTFT from submission (a round's requests queue "
        "behind each other); tok/s = (prompt + output) tokens / wall time of the rounds; CPU-time speedup = "
        "`off`'s process CPU time / the run's (steadier than wall time when other work shares the cores); "
        "held = bytes held by cached prefixes alone, between rounds. Hit rates, checkpoints, evictions and "
        "preemptions do not depend on timing (a rerun gives the same); times do. Whole run "
        f"{results['wall_s'] / 60:.1f} min.",
        "",
        "Layouts: " + ", ".join(f"{f} `{lay}`" for f, lay in results["layouts"].items()),
    ]


def findings(runs: list[dict]) -> list[str]:
    """Sentences read off one workload's numbers: the winner per family, cost against lru,
    interval against cost, the memory pressure, and whether outputs and pools were clean."""
    by = {(r["family"], r["config"]): r for r in runs}
    families = list(dict.fromkeys(r["family"] for r in runs))
    return [
        *(_winner(f, [r for r in runs if r["family"] == f]) for f in families),
        *_cost_against_lru(by, families),
        *_interval_against_cost(by, families),
        _pressure(runs),
        *_correctness(runs),
    ]


def _cache_behaviour(run: dict) -> tuple:
    """What does not depend on timing: runs alike in it differ in speed by noise only."""
    return run["cached_tokens"], run["evictions"], run["checkpoints_end"], run["preemptions"]


def _winner(family: str, rows: list[dict]) -> str:
    best = max(rows, key=lambda r: r["speedup_vs_off"])
    alike = [r for r in rows if _cache_behaviour(r) == _cache_behaviour(best)]
    if best["config"] == "off":
        text = f"{family}: fastest is `off` (no prefix-caching configuration beat it)"
    elif len(alike) > 1:
        speeds = [r["speedup_vs_off"] for r in alike]
        text = (
            f"{family}: " + ", ".join(f"`{r['config']}`" for r in alike) + " cache alike (the same hits, "
            f"evictions and checkpoints) at a {_pct(best['hit_rate'])} hit rate, {min(speeds):.2f}-"
            f"{max(speeds):.2f}x the speed of `off` (their spread is timing noise)"
        )
    else:
        text = (
            f"{family}: fastest is `{best['config']}`, {best['speedup_vs_off']:.2f}x the speed of `off` "
            f"at a {_pct(best['hit_rate'])} hit rate"
        )
    cached = [r for r in rows if r["config"] != "off"]
    top = max(cached, key=lambda r: r["hit_rate"], default=None)
    if top is not None and top["hit_rate"] > best["hit_rate"] + 1e-9:
        text += f"; the highest hit rate is `{top['config']}`'s ({_pct(top['hit_rate'])})"
    return text + "."


def _cost_against_lru(by: dict, families: list[str]) -> list[str]:
    pairs = [(f, by[f, "cost"]["hit_rate"], by[f, "lru"]["hit_rate"]) for f in families if (f, "cost") in by]
    if not pairs:
        return []
    groups = {
        "higher": [f"{f} ({_pct(c)} vs {_pct(lru)})" for f, c, lru in pairs if c > lru + 1e-9],
        "equal": [f for f, c, lru in pairs if abs(c - lru) <= 1e-9],
        "lower": [f"{f} ({_pct(c)} vs {_pct(lru)})" for f, c, lru in pairs if c < lru - 1e-9],
    }
    parts = [f"{word} for {', '.join(fs)}" for word, fs in groups.items() if fs]
    return ["`cost` eviction against `lru`, hit rate: " + "; ".join(parts) + "."]


def _interval_against_cost(by: dict, families: list[str]) -> list[str]:
    """Only for models with recurrent layers (the interval places their checkpoints)."""
    parts = []
    for f in families:
        if (f, "interval") not in by or not by[f, "cost"]["checkpoints_peak"]:
            continue
        i, c = by[f, "interval"], by[f, "cost"]
        parts.append(
            f"{f} hit rate {_pct(i['hit_rate'])} vs {_pct(c['hit_rate'])}, {i['checkpoints_peak']} vs "
            f"{c['checkpoints_peak']} checkpoints at peak, {i['speedup_vs_off']:.2f}x vs "
            f"{c['speedup_vs_off']:.2f}x"
        )
    if not parts:
        return []
    return [
        "`interval` (checkpoints at fixed spacing) against `cost` (where they pay): " + "; ".join(parts) + "."
    ]


def _pressure(runs: list[dict]) -> str:
    caching = [r for r in runs if r["config"] != "off"]
    evicting = [r for r in caching if r["evictions"]]
    text = f"The budget forced evictions in {len(evicting)} of {len(caching)} prefix-caching runs"
    if 0 < len(evicting) <= len(caching) // 2:
        text += " (" + ", ".join(_name(r) for r in evicting) + ")"
    elif len(evicting) < len(caching):
        text += " (none in " + ", ".join(_name(r) for r in caching if not r["evictions"]) + ")"
    preempted = [_name(r) for r in runs if r["preemptions"]]
    text += (
        f"; requests were preempted in {', '.join(preempted)}" if preempted else "; no request was preempted"
    )
    return text + "."


def _correctness(runs: list[dict]) -> list[str]:
    bad = [r for r in runs if not r["outputs_match"]]
    leaky = [r for r in runs if r["leaks"]]
    out = []
    if not bad and not leaky:
        out.append(
            "Every configuration produced `off`'s tokens for every request, and no run left cache "
            "held (after prefix.clear() every pool was free)."
        )
    for r in bad:
        first = r["first_mismatch"]
        out.append(
            f"**Outputs differ** from `off` in {_name(r)}: {r['mismatched_requests']} "
            f"requests, the first {first['request']} at output token {first['token']}."
        )
    out += [f"**Leak** in {_name(r)}: {'; '.join(r['leaks'])}." for r in leaky]
    return out
