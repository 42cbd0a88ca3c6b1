"""`attnlab study [CONFIG] [--out runs/study] [--budget-minutes M] [--resume]`: the main job.

CONFIG defaults to the packaged configs/study/default.yaml (the embedded k-hop MQAR curriculum, no
download). The study runs its stages in order (study/runner.py) and leaves report.md and
report.html in --out.
"""

from __future__ import annotations

import argparse
import signal
import sys
from pathlib import Path

DEFAULT_CONFIG = "study/default.yaml"


def positive_minutes(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number; expected minutes > 0, e.g. 10") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"{value:g} is not positive; expected minutes > 0, e.g. 10")
    return value


def register(sub) -> None:
    p = sub.add_parser(
        "study",
        help="the main job: train the attention variants, eval, probe, crossover; one report",
        description="Train every variant of a study at equal width and depth, then run the multi-hop eval "
        "suite, the head probes with ablation and the crossover benchmark on the trained models, within a "
        "time budget; writes report.md and a self-contained report.html in --out.",
    )
    p.add_argument("config", nargs="?", default=DEFAULT_CONFIG, metavar="CONFIG",
                   help=f"study YAML (default: the packaged {DEFAULT_CONFIG})")  # fmt: skip
    p.add_argument("--out", type=Path, default=Path("runs/study"), help="output folder (default runs/study)")
    p.add_argument("--budget-minutes", type=positive_minutes, default=None,
                   help="wall-clock budget; stages scale to it (default: the config's budget_minutes)")  # fmt: skip
    p.add_argument(
        "--resume", action="store_true", help="continue the study in --out, skipping finished stages and runs"
    )
    p.add_argument("--no-progress", action="store_true", help="no progress lines")
    p.set_defaults(func=cmd_study)


def cmd_study(args) -> int:
    import dataclasses

    from .config import load_study
    from .runner import StudyError, default_command, run_study

    try:
        study = load_study(args.config)
        if args.budget_minutes is not None:
            study = dataclasses.replace(study, budget_minutes=args.budget_minutes)
    except ValueError as err:
        print(f"attnlab study: error: {err}", file=sys.stderr)
        return 2
    command = default_command()
    resume_hint = f"{command} --resume" if "--resume" not in command else command
    previous = signal.signal(signal.SIGTERM, _raise_interrupt)  # a scheduler's stop: same as Ctrl-C
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # the stages print their own lines; not a bar per model load
    try:
        run_study(study, args.out, args.resume, command, progress=not args.no_progress)
    except StudyError as err:
        print(f"attnlab study: error: {err}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"\nattnlab study: interrupted; finished stages and runs are kept. Resume with: {resume_hint}",
              file=sys.stderr)  # fmt: skip
        return 130
    finally:
        signal.signal(signal.SIGTERM, previous)
    print(f"attnlab study: done -> {args.out}/report.md, {args.out}/report.html")
    return 0


def _raise_interrupt(signum, frame):
    raise KeyboardInterrupt
