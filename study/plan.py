"""The budget plan: how many seconds each stage gets and how many steps each variant trains.

Training is the stage that decides whether a study fits, so its size is measured, not guessed:
each variant's model takes a few optimizer steps on one batch of the data's largest slice (with the
torch threads one executor worker gets), and the step count is the most for which the runs,
handed out in order to the workers as the sweep executors do, all end within the training share,
with Lightning's overhead and each run's start-up and final validation on top. All variants
train the same number of steps (a fair comparison), from `train.min_steps` up to the configured
`base.trainer.max_steps`; a cut scales the warm-up and the generated examples with it and keeps
the curriculum's start steps. The plan is written once, at the first start, to
`<out>/plan.json`; `--resume` reuses it, so a resumed run continues the same runs.
"""

from __future__ import annotations

import copy
import time

import torch

from .config import StudyConfig

# A step in a Lightning run, two runs sharing the cores, vs a bare step alone. Measured on the
# default study (2 cores, built-in kernels): 1.06-1.15 for most variants, 1.58 for MLA; 1.25 leaves
# the makespan a margin. (1.5 matched runs whose bare-step calibration used slower kernels than the
# runs themselves, before the kernel choice was part of the run.)
LIGHTNING_OVERHEAD = 1.25
# Per run: data generation, final validation and export; in a subprocess also Python's start and imports.
RUN_OVERHEAD_S = {"sequential": 5.0, "processes": 15.0, "submitit": 20.0}


def variant_configs(study: StudyConfig) -> dict:
    """label -> the variant's resolved train config (checked by the trainer's parser)."""
    from attnlab.train import SweepConfig, expand

    sweep = SweepConfig(name=study.name, out_dir="/unused", base=study.base, grid={"variant": study.variants})
    return {run.labels["variant"]: run.config for run in expand(sweep)}


def batch_shape(cfg) -> tuple[int, int]:
    """(batch, tokens per row) of the data's largest batch."""
    data = cfg.data
    if data.source == "text":
        return data.batch_size, data.text.seq_len
    slices = data.task.slices(data.batch_size)
    return max(((batch, task.seq_len) for _, task, batch, _ in slices), key=lambda s: s[0] * s[1])


def step_seconds(cfg, threads: int, steps: int = 3) -> float:
    """Seconds per optimizer step of this variant (forward, backward, AdamW; after one warm-up step),
    with the kernels its run will use (the run config's `kernels:` choice)."""
    from attnlab.archs import AttnLabForCausalLM
    from attnlab.kernels import kernel_choice

    vocab = cfg.model.vocab_size or (cfg.data.task.vocab_size if cfg.data.source == "task" else 256)
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        torch.manual_seed(0)
        model = AttnLabForCausalLM(cfg.model.hf_config(vocab))
        opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
        batch, length = batch_shape(cfg)
        ids = torch.randint(0, vocab, (batch, length))
        with kernel_choice(cfg.kernel_choice()):
            for i in range(steps + 1):
                if i == 1:
                    start = time.perf_counter()
                model(input_ids=ids, labels=ids).loss.backward()
                opt.step()
                opt.zero_grad()
        return (time.perf_counter() - start) / steps
    finally:
        torch.set_num_threads(previous)


def plan_budget(study: StudyConfig, threads_per_run: int) -> dict:
    """-> the plan (JSON-ready): stage seconds, calibrated step times, and the training steps."""
    started = time.perf_counter()
    configs = variant_configs(study)
    stage_s = {s: getattr(study, s).share * study.budget_s for s in study.stages}
    seconds = {label: step_seconds(cfg, threads_per_run) for label, cfg in configs.items()}
    configured = (
        study.base.get("trainer", {}).get("max_steps") or next(iter(configs.values())).trainer.max_steps
    )
    workers = study.train.workers
    available = stage_s["train"] - (time.perf_counter() - started)
    overhead = RUN_OVERHEAD_S[study.train.executor.get("kind", "sequential")]

    def stage_seconds(steps: int) -> float:
        return makespan([overhead + steps * LIGHTNING_OVERHEAD * s for s in seconds.values()], workers)

    lo, hi = 0, configured  # the most steps whose schedule fits (binary search: it grows with the steps)
    while lo < hi:
        mid = (lo + hi + 1) // 2
        lo, hi = (mid, hi) if stage_seconds(mid) <= available else (lo, mid - 1)
    fit = lo
    steps = int(max(study.train.min_steps, min(configured, fit)))
    return {
        "budget_s": study.budget_s,
        "stage_s": stage_s,
        "train": {
            "steps": steps,
            "configured_steps": configured,
            "fit_steps": fit,
            "planned_seconds": round(stage_seconds(steps), 1),
            "scaled": steps < configured,
            "step_seconds": seconds,
            "threads_per_run": threads_per_run,
            "workers": workers,
            "calibration_s": round(time.perf_counter() - started, 2),
        },
    }


def makespan(durations: list[float], workers: int) -> float:
    """Seconds until the last run ends when runs start in order, each on the first free worker
    (how the sweep executors hand them out)."""
    free = [0.0] * workers
    for d in durations:
        i = free.index(min(free))
        free[i] += d
    return max(free)


def scaled_base(study: StudyConfig, steps: int) -> dict:
    """The base run config with `steps` optimizer steps: warm-up and the generated training
    examples scaled alike (the same number of passes over the data, and no time spent generating
    examples no step would see), the curriculum's start steps kept, checkpoints 4 times a run
    (for --resume), validation at the end only."""
    base = copy.deepcopy(study.base)
    trainer = base.setdefault("trainer", {})
    configured = trainer.get("max_steps", steps)
    ratio = steps / configured
    trainer["max_steps"] = steps
    trainer["val_every"] = steps
    trainer["checkpoint_every"] = max(1, steps // 4)
    trainer["log_every"] = max(1, min(trainer.get("log_every", 25), steps // 10 or 1))
    trainer["progress_bar"] = False
    optim = base.setdefault("optim", {})
    if "warmup_steps" in optim:
        optim["warmup_steps"] = max(1, round(optim["warmup_steps"] * ratio))
    task = base.get("data", {}).get("task", {})
    for entry in [task, *task.get("mixture", [])]:
        # The curriculum keeps its start steps: a model must learn the first slice before harder
        # ones arrive (cutting the warm-up phase with the run makes them arrive too early); a
        # slice that would start after the last step is not trained, only validated.
        if entry.get("train_examples") and ratio < 1:  # as many passes over fewer examples
            batch = entry.get("batch_size", base.get("data", {}).get("batch_size", 32))
            entry["train_examples"] = max(4 * batch, round(entry["train_examples"] * ratio))
    base.setdefault("seed", study.seed)
    return base
