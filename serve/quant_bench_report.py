"""quant.md and quant.png of `attnlab bench quant` (serve/quant_bench.py)."""

from __future__ import annotations

from pathlib import Path

from ..common import human_bytes
from .quant_bench_heads import top_heads

STYLES = {"fp32": ("-", "o"), "bf16": ("-.", "d"), "int4-ptq": ("--", "s"), "int4-qat": (":", "^")}
LEARNED = 0.5  # fp32 chain accuracy at the shortest length, fewest hops, below which recall is not learned


def _num(x, digits: int = 3) -> str:
    return "–" if x is None else f"{x:.{digits}f}"


def _pct(x) -> str:
    return "–" if x is None else f"{100 * x:.1f}"


def _delta(x, base) -> str:
    return "–" if x is None or base is None else f"{x - base:+.3f}"


def _head(h) -> str:
    return f"L{h[0]}H{h[1]}"


def _survival(s: dict | None) -> str:
    """'2/3 (ρ 0.91)': base top heads still in the top k, and the rank correlation."""
    if s is None:
        return "–"
    if s["overlap"] is None:
        return "–"
    kept = round(s["overlap"] * len(s["base_top"]))
    rho = "–" if s["spearman"] is None else f"{s['spearman']:.2f}"
    return f"{kept}/{len(s['base_top'])} (ρ {rho})"


def _bytes(b: dict, base: dict, variant: str) -> str:
    """Quantized modules: bytes, and how much smaller than the fp32 and bf16 models' modules."""
    q = b["quantized_modules"]
    if variant == "fp32":
        return human_bytes(q)
    if not b["int4_modules"]:
        return f"{human_bytes(q)} ({base['quantized_modules'] / q:.2f}x < fp32)"
    return (f"{human_bytes(q)} ({base['quantized_modules'] / q:.2f}x < fp32, "
            f"{base['bf16_quantized_modules'] / q:.2f}x < bf16)")  # fmt: skip


def family_table(name: str, fam: dict, probes: list[str], k: int) -> list[str]:
    variants = fam["variants"]
    base = variants["fp32"]
    lines = [
        f"## {name} ({fam['layers']})",
        "",
        "| variant | val loss | Δ loss | MQAR chain acc % (mean) | "
        + " | ".join(f"{p} top heads kept" for p in probes)
        + " | quantized modules | whole model | decode tok/s |",
        "|---|---|---|---|" + "---|" * len(probes) + "---|---|---|",
    ]
    for v, e in variants.items():
        acc = None if e["eval"] is None else e["eval"]["mean"]
        kept = [_survival((e.get("survival") or {}).get(p)) if v != "fp32" else "–" for p in probes]
        delta = _delta(e["loss"], base["loss"]) if v != "fp32" else "–"
        lines.append(
            f"| {v} | {_num(e['loss'])} | {delta} | {_pct(acc)} | "
            + " | ".join(kept)
            + f" | {_bytes(e['bytes'], base['bytes'], v)} | {human_bytes(e['bytes']['model'])} "
            f"| {e['decode']['tokens_per_s']:.0f} |"
        )
    if base["eval"] is not None:
        lengths = list(next(iter(base["eval"]["accuracy"].values())))
        hops = next(iter(base["eval"]["accuracy"]))
        first = base["eval"]["accuracy"][hops][lengths[0]]
        if first is not None and first < LEARNED:
            lines += ["", f"**fp32 has not learned recall**: {_pct(first)} % of {hops}-hop chains at length "
                      f"{lengths[0]}, so the variants' accuracies say little about what INT4 costs recall; "
                      "train longer (--train-steps)."]  # fmt: skip
        header = "| variant | hops | " + " | ".join(lengths) + " |"
        lines += [
            "",
            "Chain accuracy (%) by context length:",
            "",
            header,
            "|---|---|" + "---|" * len(lengths),
        ]
        for v, e in variants.items():
            for hops, row in e["eval"]["accuracy"].items():
                lines.append(f"| {v} | {hops} | " + " | ".join(_pct(row[n]) for n in lengths) + " |")
    tops = []
    for p in probes:
        scores = base["heads"][p]["scores"]
        found = ", ".join(f"{_head(h)} {scores[h[0]][h[1]]:.2f}" for h in top_heads(scores, k))
        tops.append(f"{p}: {found or 'no head scores above 0'}")
    lines += ["", "Top heads of fp32 — " + "; ".join(tops) + "."]
    checks = [
        f"{v} {e['kernel_check']:.1e}" for v, e in variants.items() if e.get("kernel_check") is not None
    ]
    if checks:
        lines += [
            "",
            "INT4 models measured with their weights dequantized; largest |logit difference| from torch's "
            "INT4 kernel on 4 held-out rows: " + ", ".join(checks) + ".",
        ]
    return lines


def markdown(results: dict) -> str:
    o, env = results["options"], results["environment"]
    t, m, s = o["train"], o["measure"], o["speed"]
    runs = results["runs"]
    probes = m["probes"]
    text = f"; the text LM {t['text_steps']} steps on the local corpus" if t["text"] else ""
    layouts = ", ".join(f"{f} {fam['layers']}" for f, fam in results["families"].items() if not fam["text"])
    phases = ", ".join(f"{name} {seconds / 60:.1f}" for name, seconds in results["phases_s"].items())
    lines = [
        "# INT4 weights by attention family: post-training quantization vs QAT",
        "",
        f"Families ({layouts}), d {t['hidden']}, trained {t['steps']} steps on the k-hop MQAR curriculum "
        f"(configs/train/khop_mqar.yaml, scaled){text}. Variants: fp32 = the trained model as it is "
        "(training runs in float32: fp32 is the reference); bf16 = its weights rounded to and run in "
        "bfloat16; int4-ptq = the "
        "default INT4 scheme (symmetric, groups of 32, every Linear in the decoder layers) applied after "
        "training; int4-qat = a second run with torchao fake quant from the step in the runs table's "
        "'QAT from', converted with its recorded scheme. Val loss: NLL per answer "
        "token on the held-out rows the trainer validated on. MQAR: the eval suite's chain accuracy "
        f"({m['samples']} samples per cell). Top heads kept: of the fp32 model's top {o['top_k']} heads "
        f"(those scoring at least {o['min_head_score']}: '–' when none does), how many are in the "
        "variant's "
        f"top {o['top_k']}, and Spearman's ρ of all head scores. "
        f"Decode: batch {s['batch']}, {s['prompt_len']}-token prompts, {s['new_tokens']} greedy tokens, "
        f"median of {s['repeats']} rounds, {o['threads']} torch thread(s), the INT4 models on torch's packed "
        f"INT4 matmul. torch {env['torch']}, {env['cpus']} CPUs, {env['time']}; whole run "
        f"{results['wall_s'] / 60:.1f} min ({phases}).",
        "",
        "| run | layers | steps | QAT from | val loss (trainer) | trained in |",
        "|---|---|---|---|---|---|",
    ]
    for name, r in runs.items():
        qat = "–" if r["qat_start_step"] is None else str(r["qat_start_step"])
        where = f"{r['train_s']:.0f} s" + ("" if r["trained_now"] else " (reused)")
        lines.append(f"| {name} | {r['layers']} | {r['steps']} | {qat} | {_num(r['val_loss'])} | {where} |")
    for name, fam in results["families"].items():
        lines += ["", *family_table(name, fam, probes, o["top_k"])]
    return "\n".join(lines) + "\n"


def plot(results: dict, path: Path) -> None:
    """Chain accuracy vs context length: a panel per (hops, MQAR family), a line per variant."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    families = {n: f for n, f in results["families"].items() if not f["text"]}
    hops = [str(h) for h in results["options"]["measure"]["hops"]]
    fig, axes = plt.subplots(
        len(hops), len(families), figsize=(3.6 * len(families), 2.8 * len(hops)), squeeze=False, sharey=True
    )
    for col, (name, fam) in enumerate(families.items()):
        for row, h in enumerate(hops):
            ax = axes[row][col]
            for v, e in fam["variants"].items():
                cells = e["eval"]["accuracy"][h]
                xy = [(int(n), 100 * a) for n, a in cells.items() if a is not None]
                if xy:
                    style, marker = STYLES.get(v, ("-", "."))
                    ax.plot(*zip(*xy, strict=True), style, marker=marker, ms=4, label=v)
            ax.set_xscale("log", base=2)
            lengths = results["options"]["measure"]["lengths"]
            ax.set_xticks(lengths, [str(n) for n in lengths])
            ax.set_ylim(-3, 103)
            ax.set_title(f"{name}, {h} hop{'s' if h != '1' else ''}", fontsize=9)
            ax.grid(alpha=0.3)
            if row == len(hops) - 1:
                ax.set_xlabel("context length")
            if col == 0:
                ax.set_ylabel("chain accuracy %")
    axes[0][0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
