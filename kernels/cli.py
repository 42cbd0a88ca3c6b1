"""`attnlab kernels check` and `attnlab bench kernels` on the command line.

Both run every backend of every op on a suite of workloads (configs/kernels.yaml), check each
against the reference (outputs and gradients), time the ones that pass, write traces + a markdown
table into a run directory, and store the ranking of passed backends on this device (followed by
dispatch only under `default: ranked`).
`check` defaults to the small `check` suite (correctness on odd lengths, packs, fp32 and bf16);
`bench` to the device's benchmark suite (`cpu` or `gpu`) and adds the torch.bmm yardstick.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

from . import dispatch, environment, harness, registry, report
from .definition import Trace
from .workloads import read_config, suite_workloads


def command_group(sub, name: str, help: str):
    """The subcommands of `attnlab <name>`, shared by every module that adds one (`bench` has
    several: kernels here, crossover and serve elsewhere)."""
    parser = sub.choices.get(name) or sub.add_parser(name, help=help)
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return action
    return parser.add_subparsers(dest=f"{name}_command", required=True, metavar="COMMAND")


def _names(kind: str, allowed_fn):
    def parse(text: str) -> list[str]:
        allowed = allowed_fn()
        names = [s.strip() for s in text.split(",") if s.strip()]
        bad = [n for n in names if n not in allowed]
        if bad or not names:
            raise argparse.ArgumentTypeError(f"unknown {kind} {bad or text!r}; allowed: {', '.join(allowed)}")
        return names

    return parse


def _add_common(p: argparse.ArgumentParser, default_out: str, default_reps: int) -> None:
    from attnlab.common import positive_int

    p.add_argument("--config", type=Path, default=None, help="workload YAML (default: configs/kernels.yaml)")
    p.add_argument("--suite", default=None, help="suite of the config to run")
    p.add_argument(
        "--ops", type=_names("op", registry.op_names), default=None, help="comma-separated ops (default: all)"
    )
    p.add_argument(
        "--backends", type=_names("backend", registry.backend_names), default=None,
        help="comma-separated backends (default: all; the workload's reference still gives the ground truth)",
    )  # fmt: skip
    p.add_argument(
        "--device", choices=["cpu", "cuda"], default="cuda" if torch.cuda.is_available() else "cpu"
    )
    p.add_argument(
        "--out", default=default_out, help="run directory for traces.jsonl / results.md / summary.json"
    )
    p.add_argument("--reps", type=positive_int, default=default_reps, help="timed repetitions (median)")
    p.add_argument("--threads", type=positive_int, default=None, help="torch CPU threads (default: torch's)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-rank", action="store_true", help="do not store the backend ranking for dispatch")


def register(sub) -> None:
    kernels = command_group(sub, "kernels", "kernel harness: op definitions and backends")
    check = kernels.add_parser(
        "check", help="check every backend against the reference, time, rank for dispatch"
    )
    _add_common(check, "runs/kernels-check", default_reps=3)
    check.set_defaults(func=cmd_check)
    bench = command_group(sub, "bench", "benchmarks")
    bk = bench.add_parser("kernels", help="benchmark every backend of every op (traces + markdown)")
    _add_common(bk, "runs/bench-kernels", default_reps=5)
    bk.set_defaults(func=cmd_bench)


def cmd_check(args) -> int:
    return _run(args, "attnlab kernels check", default_suite="check", yardstick=False)


def cmd_bench(args) -> int:
    return _run(args, "attnlab bench kernels", default_suite=None, yardstick=True)


def _progress(trace: Trace) -> None:
    ev = trace.evaluation
    perf = ev.get("performance", {})
    err = ev.get("correctness", {}).get("max_relative_error")
    times = " ".join(f"{k.removeprefix('latency_').removesuffix('_ms')} {v:.2f} ms" for k, v in perf.items()
                     if k in ("latency_ms", "latency_fwd_bwd_ms"))  # fmt: skip
    status = ev["status"] + (f" ({ev['log']})" if ev["status"] == "UNSUPPORTED" else "")
    print(f"  {trace.definition:18s} {trace.workload['label']:38s} {trace.solution:12s} {status}"
          + ("" if err is None else f"  rel-RMSE {err:.1e}") + (f"  {times}" if times else ""), flush=True)  # fmt: skip


def _run(args, title: str, default_suite: str | None, yardstick: bool) -> int:
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        print(f"{title}: error: --device cuda: no CUDA device here; allowed here: cpu", file=sys.stderr)
        return 2
    if args.threads:
        torch.set_num_threads(args.threads)
    # The benchmark (its own process) measures kernels, not the OS's page-fault path.
    tuned = yardstick and device.type == "cpu" and harness.keep_freed_memory()
    suite = args.suite or default_suite or ("gpu" if device.type == "cuda" else "cpu")
    try:
        workloads = suite_workloads(read_config(args.config), suite, args.ops)
    except ValueError as exc:
        print(f"{title}: error: {exc}", file=sys.stderr)
        return 2
    Path(args.out).mkdir(parents=True, exist_ok=True)  # an output folder that cannot be written fails first
    count = sum(len(v) for v in workloads.values())
    print(f"{title}: suite {suite!r}, {count} workloads on {environment.device_name(device.type)} "
          f"({torch.get_num_threads()} threads{', freed memory kept in the heap' if tuned else ''}) -> {args.out}",
          flush=True)  # fmt: skip
    traces = harness.run(workloads, device, args.backends, args.reps, args.seed, progress=_progress)
    bmm_rows = report.bmm_yardstick(traces, device, args.reps) if yardstick else []
    ranks = report.rankings(traces)
    if not args.no_rank:
        for op, modes in ranks.items():
            for mode, names in modes.items():
                if names:
                    dispatch.write_ranking(device.type, op, mode, names, {"suite": suite})
    failed = [t for t in traces if t.evaluation["status"] in harness.FAILED]
    summary = {"suite": suite, "device": environment.device_key(device.type), "malloc_keeps_freed_memory": tuned,
               "rankings": ranks,
               "failed": [f"{t.definition} {t.workload['label']} {t.solution}: {t.evaluation['status']}" for t in failed]}  # fmt: skip
    path = report.write_run(Path(args.out), f"{title} (suite {suite})", traces, summary, bmm_rows)
    print(path.read_text())
    if not args.no_rank:
        print(
            f"rankings stored in {dispatch.cache_path()}: runs whose kernel choice says `default: ranked` "
            "pick their backends from them; the default (builtin) order ignores them (--no-rank does not "
            "store them; ATTNLAB_KERNEL_CACHE moves the file)"
        )
    for line in summary["failed"]:
        print(f"FAILED {line}", file=sys.stderr)
    return 1 if failed else 0
