"""`attnlab bench train-step` on the command line (train/step_bench.py)."""

from __future__ import annotations

import sys
from pathlib import Path


def register(sub) -> None:
    from ..common import positive_int
    from ..kernels import command_group
    from .step_bench import TrainStepOptions

    bench = command_group(sub, "bench", "benchmarks")
    d = TrainStepOptions()
    p = bench.add_parser(
        "train-step", help="attnlab's full-attention training step vs HF Llama, builtin and ranked kernels"
    )
    p.add_argument(
        "--out", type=Path, default=Path("runs/bench-train-step"), help="results.json + results.md"
    )
    for flag, help in (("batch", "sequences per step"), ("length", "tokens per sequence"),
                       ("hidden", "hidden size"), ("layers", "full-attention layers"),
                       ("heads", "attention heads"), ("vocab", "vocabulary size"),
                       ("threads", "torch CPU threads"), ("warmup", "untimed steps first"),
                       ("repeats", "timed steps (median)"), ("rank-reps", "timed reps per backend when ranking")):  # fmt: skip
        name = flag.replace("-", "_")
        p.add_argument(
            f"--{flag}",
            type=positive_int,
            default=getattr(d, name),
            help=f"{help} (default {getattr(d, name)})",
        )
    p.set_defaults(func=cmd_train_step)


def cmd_train_step(args) -> int:
    from dataclasses import fields

    from .step_bench import TrainStepOptions, run

    opts = TrainStepOptions(
        **{f.name: getattr(args, f.name) for f in fields(TrainStepOptions) if f.name != "seed"}
    )
    if opts.hidden % opts.heads:
        print(f"attnlab bench train-step: error: --hidden {opts.hidden} is not a multiple of --heads {opts.heads}",
              file=sys.stderr)  # fmt: skip
        return 2
    results = run(opts, args.out)
    print((args.out / "results.md").read_text())
    return 0 if results["rows"] else 1
