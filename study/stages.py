"""The study's stages, each on the models the train stage left in `<out>/train/runs/<variant>`:

- train: the variants as one sweep (train/sweep.py: its executors, its skip-finished and resume);
- eval: the eval suite over every trained variant side by side (evals/runner.py);
- probe: the head probes and the top-k vs random ablation on each variant (probes/runner.py);
- crossover: the crossover benchmark on the trained models (serve/crossover.py).

A stage returns what the report needs to find its files and numbers (stored in
`<out>/stages/<name>.json`), or raises StageFailed with a message naming what went wrong. Stages
that can trade size for time (eval samples, probe prompts) size themselves from a pilot measurement
against their share of the budget and return a note that says so.
"""

from __future__ import annotations

import dataclasses
import json
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from .config import StudyConfig
from .plan import scaled_base


class StageFailed(RuntimeError):
    """A stage could not finish; the message says which part and why."""


@dataclass
class StageContext:
    study: StudyConfig
    out: Path
    plan: dict
    budget_s: float  # this stage's seconds
    progress: bool = True
    started: float = field(default_factory=time.perf_counter)

    def left(self) -> float:
        return self.budget_s - (time.perf_counter() - self.started)

    def say(self, text: str) -> None:
        if self.progress:
            print(f"attnlab study: {text}", flush=True)

    def run_dir(self, variant: str) -> Path:
        return self.out / "train" / "runs" / variant

    def model_dir(self, variant: str) -> Path:
        return self.run_dir(variant) / "hf"


def minutes(seconds: float) -> str:
    seconds = max(0, int(round(seconds)))
    return f"{seconds // 60}:{seconds % 60:02d}"


# --- train ----------------------------------------------------------------------------------------
def train_stage(ctx: StageContext) -> dict:
    from attnlab.train import ExecutorSection, SummarySection, SweepConfig, run_sweep

    study, steps = ctx.study, ctx.plan["train"]["steps"]
    sweep = SweepConfig(
        name=study.name,
        out_dir=str(ctx.out / "train"),
        base=scaled_base(study, steps),
        grid={"variant": study.variants},
        summary=SummarySection(metrics=["val/acc", "val/loss"], rows=["variant"]),
        executor=ExecutorSection(**study.train.executor),
    )
    ctx.say(f"train: {len(study.variants)} variants x {steps} steps ({study.train.executor.get('kind')})")
    watcher = TrainingWatcher(ctx, list(study.variants), steps)
    watcher.start()
    try:
        outcome = run_sweep(sweep)
    finally:
        watcher.stop()
    failed = [r for r in outcome.results if r.get("status") != "finished"]
    if failed:
        parts = [f"{r['variant']}: {r.get('status')} ({r.get('message') or 'no message'})" for r in failed]
        raise StageFailed(
            f"training did not finish for {'; '.join(parts)}; logs in {ctx.out / 'train' / 'runs'}"
        )
    variants = {r["variant"]: variant_facts(ctx, r) for r in outcome.results}
    (ctx.out / "variants.json").write_text(json.dumps(variants, indent=2))
    note = (
        f"Each variant trained {steps} steps, scaled down from the configured {ctx.plan['train']['configured_steps']} "
        f"to fit the training share of the budget (warm-up and generated examples scaled alike; the "
        "curriculum keeps its start steps, so slices starting after the last step are only validated)."
        if ctx.plan["train"]["scaled"]
        else f"Each variant trained the configured {steps} steps."
    )
    return {"steps": steps, "ran": outcome.ran, "skipped": outcome.skipped, "note": note}


def variant_facts(ctx: StageContext, result: dict) -> dict:
    """Parameters, cache bytes at 4K and 64K tokens, losses: the variants table's row."""
    from attnlab.archs import AttnLabForCausalLM
    from attnlab.serve import layout_of

    variant = result["variant"]
    model = AttnLabForCausalLM.from_pretrained(ctx.model_dir(variant))
    train_loss = None
    for line in (ctx.run_dir(variant) / "metrics.jsonl").read_text().splitlines():
        row = json.loads(line)
        if "train/loss" in row:
            train_loss = row["train/loss"]
    return {
        "layout": layout_of(model),
        "params": result["params"],
        "cache_bytes@4K": model.state_bytes(4096),
        "cache_bytes@64K": model.state_bytes(65536),
        "train_loss": train_loss,
        "val_loss": result.get("val/loss"),
        "val_acc": result.get("val/acc"),
        "steps": result["step"],
        "train_seconds": round(result.get("wall_s", 0.0), 1),
        "tokens_per_s": result.get("tokens_per_s"),
    }


class TrainingWatcher:
    """Prints each run's step (from its metrics.jsonl) and the stage's time left, every `every` s."""

    def __init__(self, ctx: StageContext, variants: list[str], steps: int, every: float = 15.0):
        self.ctx, self.variants, self.steps, self.every = ctx, variants, steps, every
        self.done = threading.Event()
        self.thread = threading.Thread(target=self.loop, daemon=True)

    def start(self) -> None:
        if self.ctx.progress:
            self.thread.start()

    def stop(self) -> None:
        self.done.set()
        if self.thread.is_alive():
            self.thread.join()

    def loop(self) -> None:
        while not self.done.wait(self.every):
            parts = [f"{v} {self.step(v)}/{self.steps}" for v in self.variants]
            self.ctx.say(
                f"train [{minutes(self.ctx.left())} left of {minutes(self.ctx.budget_s)}] " + ", ".join(parts)
            )

    def step(self, variant: str) -> int:
        path = self.ctx.run_dir(variant) / "metrics.jsonl"
        try:
            lines = path.read_text().splitlines()
        except OSError:
            return 0
        for line in reversed(lines):
            try:
                return int(json.loads(line)["step"])
            except (ValueError, KeyError):
                continue
        return 0


# --- eval -----------------------------------------------------------------------------------------
def eval_stage(ctx: StageContext) -> dict:
    from attnlab.evals import SuiteSpec, run_eval, run_suite

    section, variants = ctx.study.eval, list(ctx.study.variants)
    spec = SuiteSpec(
        suite=section.suite, lengths=tuple(section.lengths), hops=tuple(section.hops),
        samples=section.samples, seed=ctx.study.seed + 1234, batch_size=section.batch_size,
    )  # fmt: skip
    pilot = min(8, section.samples)
    samples = pilot
    if section.samples > pilot:  # size from a pilot: one variant, `pilot` samples per cell
        from attnlab.evals import load_model, training_mqar_options

        model, tokenizer, model_dir = load_model(ctx.run_dir(variants[0]), None)
        options = {**spec.options, "mqar": training_mqar_options(ctx.run_dir(variants[0]), model_dir)}
        t0 = time.perf_counter()
        run_suite(model, tokenizer, dataclasses.replace(spec, samples=pilot, options=options), progress=False)
        per_sample = (time.perf_counter() - t0) / pilot
        samples = int(min(section.samples, max(pilot, 0.9 * ctx.left() / (len(variants) * per_sample))))
    spec = dataclasses.replace(spec, samples=samples)
    ctx.say(
        f"eval: suite {section.suite}, {samples} samples per cell, lengths {section.lengths}, hops {section.hops}"
    )
    run_eval([ctx.run_dir(v) for v in variants], spec, ctx.out / "eval", None, progress=ctx.progress)
    note = (
        f"{samples} samples per cell (of up to {section.samples}; sized from a pilot run to the eval share)."
        if samples < section.samples
        else f"{samples} samples per cell."
    )
    return {"samples": samples, "note": note}


# --- probe ----------------------------------------------------------------------------------------
def probe_settings(ctx: StageContext, needles: int):
    from attnlab.probes import ProbeSettings

    task = (ctx.study.base.get("data") or {}).get("task") or {}
    return ProbeSettings(
        seed=ctx.study.seed, niah_needles=needles, max_context=ctx.study.probe.max_context,
        kv_separator=bool(task.get("separator", False)), progress=False,
    )  # fmt: skip


def probe_variant(ctx: StageContext, variant: str, needles: int) -> dict:
    from attnlab.probes import ProbeTarget, load_model, run_probes

    section = ctx.study.probe
    target = ProbeTarget.wrap(load_model(ctx.model_dir(variant)))
    return run_probes(
        target, section.probes, probe_settings(ctx, needles), ctx.out / "probe" / variant,
        source=str(ctx.model_dir(variant)), ablate_k=section.ablate, ablate_by=section.ablate_by,
        draws=section.draws,
    )  # fmt: skip


def probe_stage(ctx: StageContext) -> dict:
    section, variants = ctx.study.probe, list(ctx.study.variants)
    t0 = time.perf_counter()
    probe_variant(ctx, variants[0], 1)  # the pilot: one prompt per cell
    per_needle = time.perf_counter() - t0
    needles = int(min(section.needles, max(1, ctx.left() / (len(variants) * per_needle))))
    ctx.say(f"probe: {', '.join(section.probes)}, ablate top {section.ablate} by {section.ablate_by}, "
            f"{needles} prompt(s) per cell")  # fmt: skip
    for i, variant in enumerate(variants):
        if i > 0 or needles > 1:
            probe_variant(ctx, variant, needles)
        ctx.say(f"probe: {variant} done ({i + 1}/{len(variants)}, {minutes(ctx.left())} left)")
    note = f"{needles} prompt(s) per (length, depth) cell" + (
        f" (of up to {section.needles}; sized from a pilot run to the probe share)."
        if needles < section.needles
        else "."
    )
    return {"needles": needles, "note": note}


# --- crossover ------------------------------------------------------------------------------------
def crossover_stage(ctx: StageContext) -> dict:
    import torch

    from attnlab.serve import CrossoverOptions
    from attnlab.serve import run_crossover as run

    section = ctx.study.crossover
    device = "cuda" if torch.cuda.is_available() else "cpu"
    models = {v: str(ctx.model_dir(v)) for v in ctx.study.variants}
    deadline = 0.85 * ctx.left()
    opts = CrossoverOptions(
        out=ctx.out / "crossover", models=models, lengths=list(section.lengths), batch=section.batch,
        decode_steps=section.decode_steps, repeats=section.repeats, deadline_s=deadline,
        max_point_seconds=max(2.0, deadline / 4), memory_budget=1 << 30, device=device,
    )  # fmt: skip
    ctx.say(f"crossover: {len(models)} variants at {section.lengths[0]}..{section.lengths[-1]} tokens "
            f"(points past {minutes(deadline)} are skipped)")  # fmt: skip
    results = run(opts, progress=ctx.progress)
    measured = [p for p in results["points"] if isinstance(p.get("decode_b1"), dict)]
    longest = max((p["length"] for p in measured), default=0)
    return {
        "longest_measured": longest,
        "note": f"Decode measured up to {longest} tokens; points past the crossover share are recorded as skipped.",
    }


STAGE_FUNCTIONS = {
    "train": train_stage,
    "eval": eval_stage,
    "probe": probe_stage,
    "crossover": crossover_stage,
}
