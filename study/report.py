"""The study report, `<out>/report.md` and a self-contained `<out>/report.html`, built only from the
files the stages wrote in `<out>` (runner.py lists them): every number in it can be traced to one.
Written after each stage, so a stopped or failed study still has a report of what finished."""

from __future__ import annotations

import json
from pathlib import Path

import yaml

from attnlab.common import human_bytes

from .document import Document
from .plots import ablation_bars, probe_grid
from .stages import minutes


def load(path: Path):
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None


def number(value, digits: int = 3) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def write_report(out: Path) -> None:
    out = Path(out)
    study = yaml.safe_load((out / "study.yaml").read_text())
    plan = load(out / "plan.json") or {}
    stages = {s: load(out / "stages" / f"{s}.json") or {"status": "not run"} for s in study["stages"]}
    doc = Document(out)
    header(doc, study, plan, stages)
    variants = load(out / "variants.json")
    if variants:
        variants_section(doc, out, variants, stages)
    if (report := load(out / "eval" / "eval.json")) is not None:
        eval_section(doc, out, report, stages)
    scores = {v: s for v in study["variants"] if (s := load(out / "probe" / v / "scores.json"))}
    if scores:
        probe_section(doc, out, study, scores, stages)
    if (results := load(out / "crossover" / "results.json")) is not None:
        crossover_section(doc, out, results, stages)
    reproduce_section(doc, out, study, plan, stages)
    machine_section(doc, plan)
    (out / "report.md").write_text(doc.markdown())
    (out / "report.html").write_text(doc.html(f"attnlab study: {study['name']}"))


def header(doc: Document, study: dict, plan: dict, stages: dict) -> None:
    doc.heading(f"attnlab study: {study['name']}", 1)
    finished = [s for s, r in stages.items() if r.get("status") == "finished"]
    total = sum(r.get("seconds", 0) for r in stages.values()) + plan.get("train", {}).get("calibration_s", 0)
    doc.paragraph(
        f"{len(study['variants'])} attention variants ({', '.join(study['variants'])}) trained at equal width "
        f"and depth on the same data, then compared by the stages below. Budget {minutes(plan.get('budget_s', 0))} "
        f"(min:s); stages finished: {len(finished)} of {len(stages)}; wall time of the stages "
        f"{minutes(total)}."
    )
    rows = []
    for stage, record in stages.items():
        status = record["status"] + (f": {record['message']}" if record.get("message") else "")
        seconds = record.get("seconds")
        rows.append([stage, status, minutes(seconds) if seconds is not None else "–",
                     minutes(record.get("budget_s", plan.get("stage_s", {}).get(stage, 0))), record.get("note", "")])  # fmt: skip
    doc.table(["stage", "status", "time", "budget", "what the budget allowed"], rows)


def variants_section(doc: Document, out: Path, variants: dict, stages: dict) -> None:
    doc.heading("Variants")
    evals = load(out / "eval" / "eval.json")
    means = {}
    if evals:
        for model in evals["models"]:
            scored = [c["score"] for c in model["cells"] if c["score"] is not None]
            means[model["name"]] = sum(scored) / len(scored) if scored else None
    rows = [
        [name, f"`{v['layout']}`", f"{v['params']:,}", human_bytes(v["cache_bytes@4K"]),
         human_bytes(v["cache_bytes@64K"]), number(v["train_loss"]), number(v["val_loss"]),
         number(v["val_acc"]), number(means.get(name)), f"{v['steps']}", f"{v['train_seconds']:.0f} s"]
        for name, v in variants.items()
    ]  # fmt: skip
    doc.table(
        ["variant", "layers", "parameters", "cache @ 4K", "cache @ 64K", "final train loss", "val loss",
         "val acc", "eval mean acc", "steps", "train time"],
        rows,
    )  # fmt: skip
    doc.paragraph(
        "Cache bytes per sequence from `model.state_bytes(T)` of each trained model (fp32); losses and "
        "validation accuracy (answer tokens) from each run's `metrics.jsonl` and `result.json` under "
        f"`train/runs/`; eval mean over every cell of the eval stage. {stages['train'].get('note', '')}"
    )


def eval_section(doc: Document, out: Path, report: dict, stages: dict) -> None:
    doc.heading("Multi-hop eval: accuracy by length and hops")
    suite = report["suite"]
    lengths = sorted({c["length"] for m in report["models"] for c in m["cells"]})
    rows = []
    for model in report["models"]:
        cells = {(c["task"], c["hops"], c["length"]): c for c in model["cells"]}
        for task, hops in dict.fromkeys((c["task"], c["hops"]) for c in model["cells"]):
            row = [model["name"], task, str(hops)]
            for length in lengths:
                cell = cells.get((task, hops, length))
                row.append("–" if cell is None or cell["score"] is None else f"{cell['score']:.2f}")
            rows.append(row)
    doc.table(["variant", "task", "hops", *map(str, lengths)], rows)
    doc.paragraph(
        f"Suite `{suite['suite']}`, {suite['samples']} samples per cell, seed {suite['seed']}; MQAR cells score "
        "a chain only when every link is right (greedy decoding would write it out). A dash: the cell "
        f"cannot be built at that length or vocabulary. From `eval/eval.json`. {stages['eval'].get('note', '')}"
    )
    doc.figure(out / "eval" / "accuracy_vs_length.png", "accuracy vs context length, per hop count")


def probe_section(doc: Document, out: Path, study: dict, scores: dict, stages: dict) -> None:
    doc.heading("Head probes and ablation")
    probes = study["probe"]["probes"]
    rows = []
    for variant, s in scores.items():
        row = [variant]
        for probe in probes:
            result = s["probes"].get(probe)
            total = sum(s["heads_per_layer"])
            found = result["heads_found"] if result else []
            tops = ", ".join(f"L{h[0]}H{h[1]} ({h[2]:.2f})" for h in found[:3])
            row.append(f"{len(found)} / {total}" + (f": {tops}" if tops else ""))
        a = s.get("ablation")
        if a:
            row += [
                f"{a['baseline_accuracy']:.2f}",
                f"{a['top_accuracy']:.2f}",
                f"{a['random_accuracy_mean']:.2f}",
            ]
        rows.append(row)
    ablate = study["probe"]
    doc.table(
        ["variant", *[f"{p} heads" for p in probes], "acc, none masked",
         f"acc, top {ablate['ablate']} masked", f"acc, {ablate['ablate']} random masked"],
        rows,
    )  # fmt: skip
    doc.paragraph(
        f"Heads above each probe's threshold (top 3 shown with scores). Ablation: the top {ablate['ablate']} heads "
        f"by {ablate['ablate_by']} are masked (uniform attention, Wu et al.) against {ablate['ablate']} random heads "
        f"(mean of {ablate['draws']} draws), on fresh prompts of the probe's task. From `probe/<variant>/scores.json`. "
        f"{stages['probe'].get('note', '')}"
    )
    probe_grid(scores, probes, out / "probe_heatmaps.png")
    doc.figure(out / "probe_heatmaps.png", "head scores, layers x heads, per variant")
    ablation_bars(scores, out / "probe_ablation.png")
    doc.figure(out / "probe_ablation.png", "task accuracy with the top heads masked vs random heads")


def crossover_section(doc: Document, out: Path, results: dict, stages: dict) -> None:
    from attnlab.serve import CROSSOVER_METRICS as METRICS

    doc.heading("Crossover: where each variant becomes cheaper than full attention")
    rows = []
    for family, metrics in results.get("crossovers", {}).items():
        row = [family]
        for metric in METRICS:
            c = metrics.get(metric, {})
            if c.get("length") and c["note"].startswith("cheaper from the first"):
                row.append(f"≤ {c['length']:.0f}")
            else:
                row.append(f"{c['length']:.0f}" if c.get("length") else c.get("note", "–"))
        rows.append(row)
    doc.table(["variant", *[METRICS[m][0] for m in METRICS]], rows)
    m = results["machine"]
    doc.paragraph(
        "The shortest context (tokens) from which on each variant stays cheaper than `full` (interpolated "
        "between measured lengths), measured through the serving engine on the trained models "
        f"({m['device']}, {m['threads']} threads). From `crossover/results.json`; every point in "
        f"`crossover/crossover.md`. {stages['crossover'].get('note', '')}"
    )
    doc.figure(out / "crossover" / "crossover.png", "cost vs context length per variant (X: crossover)")


def reproduce_section(doc: Document, out: Path, study: dict, plan: dict, stages: dict) -> None:
    doc.heading("Reproduce")
    runs = out / "train" / "runs"
    variants = list(study["variants"])
    lines = [
        f"# the whole study (add --resume to continue a stopped one)\n{plan.get('command', 'attnlab study')}"
    ]
    lines.append(
        "# one variant's training run\n" + f"attnlab train --config {runs / variants[0]}/config.yaml"
    )
    e = stages.get("eval", {})
    if e.get("status") == "finished":
        ev = study["eval"]
        lines.append(
            "# the eval stage\n"
            f"attnlab eval {runs / variants[0]} --compare {' '.join(str(runs / v) for v in variants[1:])} "
            f"--suite {ev['suite']} --lengths {','.join(map(str, ev['lengths']))} --hops {','.join(map(str, ev['hops']))} "
            f"--samples {e['samples']} --seed {study['seed'] + 1234} --batch-size {ev['batch_size']} --out {out / 'eval'}"
        )
    p = stages.get("probe", {})
    if p.get("status") == "finished":
        pr = study["probe"]
        separator = ((study["base"].get("data") or {}).get("task") or {}).get("separator", False)
        lines.append(
            "# the probe stage, one variant\n"
            f"attnlab probe {runs / variants[0]}/hf --probes {','.join(pr['probes'])} --ablate top:{pr['ablate']} "
            f"--ablate-by {pr['ablate_by']} --draws {pr['draws']} --max-context {pr['max_context']} "
            f"--niah-needles {p['needles']} --kv-separator {'on' if separator else 'off'} --seed {study['seed']} "
            f"--out {out / 'probe' / variants[0]}"
        )
    c = stages.get("crossover", {})
    if c.get("status") == "finished":
        cr = study["crossover"]
        models = ",".join(f"{v}={runs / v}/hf" for v in variants)
        lines.append(
            "# the crossover stage (the study also stops measuring at its share of the budget)\n"
            f"attnlab bench crossover --models {models} --lengths {','.join(map(str, cr['lengths']))} "
            f"--batch 1,{cr['batch']} --decode-steps {cr['decode_steps']} --repeats {cr['repeats']} "
            f"--out {out / 'crossover'}"
        )
    doc.code("\n\n".join(lines))


def machine_section(doc: Document, plan: dict) -> None:
    m = plan.get("machine")
    if not m:
        return
    doc.heading("Machine")
    t = plan["train"]
    doc.paragraph(
        f"{m['processor']}, {m['cpus']} CPUs{', ' + m['cuda'] if m.get('cuda') else ''}; {m['platform']}; "
        f"Python {m['python']}, torch {m['torch']}. Started {plan.get('created', '?')}. Training: "
        f"{t['workers']} run(s) at a time, {t['threads_per_run']} torch thread(s) each; calibrated seconds per "
        "step: " + ", ".join(f"{v} {s:.3f}" for v, s in t["step_seconds"].items()) + "."
    )
