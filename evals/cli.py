"""`attnlab eval` (the suite runner) and `attnlab lm-eval` (lm-eval's own CLI with attnlab's model
and tasks registered)."""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path

DEFAULT_LENGTHS = "256,512,1k,2k,4k"
DEFAULT_HOPS = "1,2,4"


def parse_length(text: str) -> int:
    match = re.fullmatch(r"\s*(\d+)\s*([kK]?)\s*", text)
    if not match or int(match[1]) == 0:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a length; expected positive integers or k-suffixed values (1k = 1024), e.g. {DEFAULT_LENGTHS}"
        )
    return int(match[1]) * (1024 if match[2] else 1)


def length_list(text: str) -> list[int]:
    return [parse_length(part) for part in text.split(",")]


def hops_list(text: str) -> list[int]:
    values = []
    for part in text.split(","):
        if not part.strip().isdigit() or int(part) == 0:
            raise argparse.ArgumentTypeError(
                f"{part!r} is not a hop count; expected positive integers, e.g. {DEFAULT_HOPS}"
            )
        values.append(int(part))
    return values


def task_list(text: str) -> list[str]:
    from .suite import all_tasks

    tasks = [t.strip() for t in text.split(",") if t.strip()]
    unknown = [t for t in tasks if t not in all_tasks()]
    if unknown or not tasks:
        raise argparse.ArgumentTypeError(
            f"unknown task(s) {unknown or [text]}; allowed: {', '.join(all_tasks())}"
        )
    return tasks


def options_json(text: str) -> dict:
    try:
        value = json.loads(text)
    except json.JSONDecodeError as err:
        raise argparse.ArgumentTypeError(
            f'not valid JSON ({err}); expected e.g. \'{{"mqar": {{"kv_pairs": 8}}}}\''
        ) from None
    if not isinstance(value, dict) or not all(isinstance(v, dict) for v in value.values()):
        raise argparse.ArgumentTypeError("expected a JSON object {task: {option: value}}")
    return value


def register(sub) -> None:
    from attnlab.common import positive_int
    from attnlab.kernels import add_kernels_option

    from .suite_names import SUITES

    p = sub.add_parser(
        "eval",
        help="run the eval suite (accuracy by task x length x hops) on a run dir or HF model folder",
        description="Generate the suite's samples (seeded, length-exact for the model's tokenizer), run batched "
        "greedy generation, score, and write eval.json, eval.md, predictions.jsonl and PNG plots.",
    )
    p.add_argument("path", metavar="PATH", help="attnlab run dir or HF causal-LM folder")
    p.add_argument("--compare", nargs="+", default=[], metavar="PATH", help="more models to put side by side")
    p.add_argument("--suite", choices=list(SUITES), default="multihop", help="task list (default: multihop)")
    p.add_argument("--tasks", type=task_list, help="comma-separated tasks, overriding the suite's list")
    p.add_argument(
        "--lengths",
        type=length_list,
        default=length_list(DEFAULT_LENGTHS),
        help=f"context lengths in tokens (default {DEFAULT_LENGTHS})",
    )
    p.add_argument(
        "--hops", type=hops_list, default=hops_list(DEFAULT_HOPS), help=f"hop counts (default {DEFAULT_HOPS})"
    )
    p.add_argument("--samples", type=positive_int, default=20, help="samples per cell (default 20)")
    p.add_argument("--seed", type=int, default=1234)
    p.add_argument("--batch-size", type=positive_int, default=8)
    p.add_argument(
        "--options",
        type=options_json,
        default={},
        help='per-task generator options as JSON, e.g. \'{"mqar": {"kv_pairs": 8}}\'; for an attnlab run '
        "trained on MQAR, its training options (power_a, random_non_queries, separator) are the defaults",
    )
    p.add_argument("--device", help="cpu, cuda, cuda:1 ... (default: cuda if available)")
    p.add_argument("--out", help="output dir (default: PATH/eval, or PATH/eval-compare with --compare)")
    add_kernels_option(p)
    p.set_defaults(func=cmd_eval)

    lm = sub.add_parser(
        "lm-eval",
        help="lm-eval's CLI with the `attnlab` model and the attnlab_* tasks registered",
        description="Runs lm_eval with the given arguments after registering `--model attnlab`; "
        "--include_path defaults to attnlab's task YAMLs.",
        add_help=False,
        prefix_chars="+",  # every argument, "--model" included, belongs to lm-eval
    )
    lm.add_argument("lm_eval_args", nargs=argparse.REMAINDER)
    lm.set_defaults(func=cmd_lm_eval)


def cmd_eval(args) -> int:
    from .runner import run_eval
    from .suite import SuiteSpec

    paths = [Path(args.path), *map(Path, args.compare)]
    for p in paths:
        if not p.exists():
            raise SystemExit(f"attnlab eval: error: PATH {p} does not exist")
    try:
        spec = SuiteSpec(
            suite=args.suite,
            lengths=tuple(args.lengths),
            hops=tuple(args.hops),
            samples=args.samples,
            seed=args.seed,
            batch_size=args.batch_size,
            tasks=tuple(args.tasks) if args.tasks else None,
            options=args.options,
        )
    except ValueError as err:  # e.g. --options naming an option the task does not have
        raise SystemExit(f"attnlab eval: error: {err}") from None
    out = Path(args.out) if args.out else paths[0] / ("eval-compare" if args.compare else "eval")
    try:
        run_eval(paths, spec, out, args.device)
    except (ValueError, FileNotFoundError) as err:  # a damaged model folder, a PATH with no model
        raise SystemExit(f"attnlab eval: error: {err}") from None
    print((out / "eval.md").read_text())
    print(f"wrote {out}/eval.json, eval.md, predictions.jsonl, accuracy_vs_length.png, heatmap.png")
    return 0


def cmd_lm_eval(args) -> int:
    from .lm_eval_main import main

    return main(args.lm_eval_args)
