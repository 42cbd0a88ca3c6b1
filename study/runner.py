"""`attnlab study`: run a study's stages in order in one output folder, and write its report.

<out>/study.yaml           the study as resolved (every default filled in)
<out>/plan.json            the budget split and the training steps, fixed at the first start
<out>/stages/<stage>.json  each stage's status, seconds, budget and what the report needs
<out>/train/               the variants' sweep: runs/<variant>/ (config.yaml, metrics.jsonl, hf/,
                           result.json ...), results.csv, summary.md
<out>/variants.json        per variant: layout, parameters, cache bytes at 4K / 64K, losses
<out>/eval/                eval.json, eval.md, predictions.jsonl, accuracy_vs_length.png, heatmap.png
<out>/probe/<variant>/     scores.json, probe.md, one heatmap per probe, ablation.png
<out>/crossover/           crossover.json, crossover.md, crossover.png
<out>/report.md, report.html   the report (written after every stage, so a stop leaves one)

A finished stage is not run again under --resume; the train stage's sweep also skips finished runs
and resumes the others from their checkpoints. A stage that fails is recorded with its message,
the report shows what finished, and the study stops with a non-zero exit.
"""

from __future__ import annotations

import json
import platform
import sys
import time
from pathlib import Path

import torch
import yaml

from attnlab.train import write_json

from .config import StudyConfig, from_dict
from .plan import plan_budget
from .stages import STAGE_FUNCTIONS, StageContext, StageFailed, minutes


class StudyError(RuntimeError):
    """The study cannot start or continue; the message says why and what to do."""


def read_json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (json.JSONDecodeError, OSError) as err:
        raise StudyError(f"{path}: unreadable ({err}); delete it to redo that part") from None


def machine() -> dict:
    import os

    return {
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpus": os.cpu_count(),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
    }


def prepare(study: StudyConfig, out: Path, resume: bool, command: str) -> dict:
    """Check the out folder against --resume; write study.yaml and the plan on a first start."""
    saved = out / "study.yaml"
    if saved.exists():
        if not resume:
            raise StudyError(
                f"{out} already holds a study; pass --resume to continue it, or choose another --out"
            )
        previous = from_dict(yaml.safe_load(saved.read_text()))
        if previous.digest() != study.digest():
            raise StudyError(
                f"{out} holds a study with a different config; --resume continues the same study "
                f"(delete {out} or choose another --out to start this one)"
            )
    out.mkdir(parents=True, exist_ok=True)
    (out / "stages").mkdir(exist_ok=True)
    if not saved.exists():
        saved.write_text(yaml.safe_dump(study.to_dict(), sort_keys=False))
    plan = read_json(out / "plan.json")
    if plan is None:
        from attnlab.train import threads_per_run

        threads = threads_per_run(study.train.workers)
        plan = plan_budget(study, threads)
        plan.update(command=command, machine=machine(), created=time.strftime("%Y-%m-%dT%H:%M:%S"))
        write_json(out / "plan.json", plan)
    return plan


def run_study(
    study: StudyConfig, out: Path, resume: bool = False, command: str = "", progress: bool = True
) -> dict:
    """Run every stage not yet finished; -> {stage: record}. Raises StudyError when a stage fails
    (after recording it and writing the report) or the folder does not fit --resume."""
    from .report import write_report

    out = Path(out)
    started = time.perf_counter()
    plan = prepare(study, out, resume, command)
    steps = plan["train"]
    say = (lambda text: print(f"attnlab study: {text}", flush=True)) if progress else (lambda text: None)
    say(f"{study.name}: {len(study.variants)} variants, stages {', '.join(study.stages)}, budget "
        f"{minutes(plan['budget_s'])} -> {out}")  # fmt: skip
    say(f"plan: {steps['steps']} training steps per variant"
        + (f" (scaled from {steps['configured_steps']} to the budget)" if steps["scaled"] else ""))  # fmt: skip
    records = {}
    for i, stage in enumerate(study.stages):
        path = out / "stages" / f"{stage}.json"
        record = read_json(path)
        if record and record.get("status") == "finished":
            say(f"stage {i + 1}/{len(study.stages)} {stage}: finished before, skipped (--resume)")
            records[stage] = record
            continue
        budget = plan["stage_s"][stage]
        say(f"stage {i + 1}/{len(study.stages)} {stage} (budget {minutes(budget)}; "
            f"{minutes(time.perf_counter() - started)} elapsed)")  # fmt: skip
        ctx = StageContext(study, out, plan, budget, progress)
        write_json(path, {"status": "running", "budget_s": budget})
        try:
            outputs = STAGE_FUNCTIONS[stage](ctx)
        except (KeyboardInterrupt, SystemExit) as err:  # Ctrl-C, SIGTERM (Lightning turns it into SystemExit)
            seconds = round(time.perf_counter() - ctx.started, 1)
            write_json(path, {"status": "interrupted", "budget_s": budget, "seconds": seconds})
            write_report(out)
            raise KeyboardInterrupt from err
        except Exception as err:  # noqa: BLE001 - any failure stops the study with its message recorded
            message = str(err) if isinstance(err, StageFailed) else f"{type(err).__name__}: {err}"
            seconds = round(time.perf_counter() - ctx.started, 1)
            write_json(path, {"status": "failed", "message": message, "budget_s": budget, "seconds": seconds})
            write_report(out)
            raise StudyError(
                f"stage {stage} failed: {message}; the earlier stages' results and a report are in {out}"
            ) from err
        record = {
            "status": "finished",
            "budget_s": budget,
            "seconds": round(time.perf_counter() - ctx.started, 1),
            **outputs,
        }
        write_json(path, record)
        records[stage] = record
        write_report(out)
        say(f"stage {stage} finished in {minutes(record['seconds'])} (budget {minutes(budget)})")
    write_report(out)
    return records


def default_command(argv: list[str] | None = None) -> str:
    return " ".join(["attnlab", *(sys.argv[1:] if argv is None else argv)])
