"""schedule.md and schedule.png of `attnlab bench schedule` (schedule_bench.py)."""

from __future__ import annotations

from pathlib import Path

from ..common import human_bytes


def _ms(s: float | None) -> str:
    return "-" if s is None else f"{s * 1e3:.0f}"


def _ratio(a: float | None, b: float | None) -> str:
    return "-" if not a or not b else f"{a / b:.2f}"


def point(results: dict, model: str, load: float, schedule: str) -> dict | None:
    for p in results["points"]:
        if (p["model"], p["load"], p["schedule"]) == (model, load, schedule):
            return p
    return None


def markdown(results: dict) -> str:
    o, env = results["options"], results["environment"]
    lines = [
        "# Layered vs chunked prefill",
        "",
        f"{o['requests']} requests per point with prompts of {o['prompt_len'] // 2}-{o['prompt_len']} tokens and "
        f"{o['new_tokens']} output tokens, arriving as a Poisson stream while {o['decoders']} other requests "
        f"decode throughout; token budget {o['token_budget']} per step (chunked: the chunk; layered: "
        f"the fewest groups that keep prompt tokens x group layers within budget x layers"
        + (")" if o["layer_groups"] is None else f", here fixed at {o['layer_groups']})")
        + f". Models: d{o['hidden']}, {o['layers']} layers, MoE {o['experts']} experts top-{o['top_k']} "
        f"(expert width {o['expert_size']}) or dense (width {o['top_k'] * o['expert_size']}). Load = arrival "
        f"rate x one prompt's prefill time alone. Times in ms; ratio = layered / chunked (< 1: layered "
        f"better). torch {env['torch']}, {env['threads']} thread(s), {env['time']}.",
        "",
        "| model | load | schedule | TTFT p50 | TTFT p99 | TBT p50 | TBT p99 | e2e p50 | e2e p99 "
        "| expert bytes / prompt token |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for p in results["points"]:
        per_token = p["expert_bytes_per_prompt_token"]
        lines.append(
            f"| {p['model']} | {p['load']} | {p['schedule']} | {_ms(p['ttft_p50_s'])} | {_ms(p['ttft_p99_s'])} "
            f"| {_ms(p['tbt_p50_s'])} | {_ms(p['tbt_p99_s'])} | {_ms(p['e2e_p50_s'])} | {_ms(p['e2e_p99_s'])} "
            f"| {'-' if per_token is None else human_bytes(per_token)} |"
        )
    pairs = [
        (m, load)
        for m in results["models"]
        for load in o["loads"]
        if point(results, m, load, "chunked") and point(results, m, load, "layered")
    ]
    if pairs:
        lines += [
            "",
            "## Layered / chunked",
            "",
            "| model | load | TTFT p50 | TBT p50 | TBT p99 | e2e p50 | expert bytes / prompt token |",
            "|---|---|---|---|---|---|---|",
        ]
        for m, load in pairs:
            c, ly = point(results, m, load, "chunked"), point(results, m, load, "layered")
            cells = [
                _ratio(ly[k], c[k])
                for k in (
                    "ttft_p50_s",
                    "tbt_p50_s",
                    "tbt_p99_s",
                    "e2e_p50_s",
                    "expert_bytes_per_prompt_token",
                )
            ]
            lines.append(f"| {m} | {load} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def plot(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    colors = dict(zip(results["models"], plt.rcParams["axes.prop_cycle"].by_key()["color"], strict=False))
    for ax, key, title in zip(
        axes, ("ttft_p50_s", "tbt_p99_s"), ("TTFT p50", "time between tokens p99"), strict=True
    ):
        for model in results["models"]:
            for schedule, style in (("chunked", "-"), ("layered", "--")):
                xy = [(p["load"], p[key] * 1e3) for p in results["points"]
                      if p["model"] == model and p["schedule"] == schedule and p[key] is not None]  # fmt: skip
                if xy:
                    ax.plot(*zip(*xy, strict=True), style, marker="o", ms=3, color=colors[model],
                            label=f"{model} {schedule}")  # fmt: skip
        ax.set_xlabel("load (arrival rate x prefill time)")
        ax.set_ylabel("ms")
        ax.set_title(title)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
