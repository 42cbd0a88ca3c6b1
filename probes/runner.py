"""The probe job: score the requested probes, optionally ablate, and write the run directory.

out/scores.json     per probe: scores [layer][head], threshold, heads found, details; ablation
out/<probe>.png     layers × heads heatmap
out/ablation.png    top-k vs random-k masking (with --ablate)
out/probe.md        summary
"""

from __future__ import annotations

import json
from pathlib import Path

from ..kernels import describe_kernels, kernel_record
from .ablation import AblationResult, run_ablation
from .plots import ablation_plot, heatmap
from .probe import ProbeResult, ProbeSettings
from .probe_markdown import markdown
from .probe_registry import get_probe
from .target import ProbeTarget


def run_probes(
    target: ProbeTarget,
    probes: list[str],
    settings: ProbeSettings,
    out_dir: Path,
    source: str = "model",
    ablate_k: int | None = None,
    ablate_by: str = "retrieval",
    mode: str = "uniform",
    draws: int = 5,
) -> dict:
    heads = len(target.all_heads())
    if ablate_k is not None and not 1 <= ablate_k < heads:  # checked before any work or output
        raise ValueError(f"--ablate top:{ablate_k}: the model has {heads} heads; k must be in 1..{heads - 1}")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    instances = {name: get_probe(name) for name in probes}
    if ablate_k is not None and ablate_by not in instances:
        instances[ablate_by] = get_probe(ablate_by)  # the ranking needs its scores
    results: dict[str, ProbeResult] = {}
    for name, probe in instances.items():
        results[name] = probe.score(target, settings)
        heatmap(results[name], out_dir / f"{name}.png", f"{name} score (threshold {probe.threshold})")
    ablation: AblationResult | None = None
    if ablate_k is not None:
        ablation = run_ablation(
            target, instances[ablate_by], results[ablate_by], settings, ablate_k, mode, draws
        )
        ablation_plot(ablation, out_dir / "ablation.png")
    report = {
        "model": source,
        "kind": target.kind,
        "heads_per_layer": target.heads_per_layer,
        "settings": settings.to_dict(),
        "probes": {name: result.to_dict() for name, result in results.items()},
        "ablation": None if ablation is None else ablation.to_dict(),
        "kernels": kernel_record(),
    }
    (out_dir / "scores.json").write_text(json.dumps(report, indent=2))
    summaries = {name: instances[name].summary for name in results}
    md = markdown(source, target.kind, target.heads_per_layer, results, summaries, ablation)
    md += f"\n{describe_kernels(report['kernels'])}\n"
    (out_dir / "probe.md").write_text(md)
    return report
