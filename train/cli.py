"""`attnlab train` and `attnlab sweep`.

    attnlab train --config configs/train/mqar.yaml [--optim.lr 1e-3 …] [--resume]
    attnlab sweep configs/sweeps/zoology_mqar.yaml [--executor.kind processes --executor.workers 2]

Both hand their words to jsonargparse (train/config.py, train/sweep.py), so YAML values and CLI
overrides are checked the same way; a bad value exits with status 2 and a message naming the field.
"""

from __future__ import annotations

import argparse
import sys


def register(sub) -> None:
    # prefix_chars="+": argparse passes every word (--config, --optim.lr, --help) through to jsonargparse.
    train = sub.add_parser(
        "train",
        prefix_chars="+",
        add_help=False,
        help="train one model from a YAML run config (attnlab train --help)",
    )
    train.add_argument("words", nargs=argparse.REMAINDER)
    train.set_defaults(func=cmd_train)
    sweep = sub.add_parser(
        "sweep",
        prefix_chars="+",
        add_help=False,
        help="expand a sweep YAML into runs, run the unfinished ones, aggregate (attnlab sweep --help)",
    )
    sweep.add_argument("words", nargs=argparse.REMAINDER)
    sweep.set_defaults(func=cmd_sweep)


def fail(command: str, err: Exception) -> int:
    print(f"attnlab {command}: error: {err}", file=sys.stderr)
    return 2


def cmd_train(args) -> int:
    from .config import parse_args

    try:
        cfg, resume = parse_args(args.words)
    except ValueError as err:
        return fail("train", err)
    from .run import train  # Lightning: after parsing, so --help and bad flags answer fast

    print(f"attnlab train -> {cfg.run_dir}" + (" (resume)" if resume else ""), flush=True)
    try:
        result = train(cfg, resume=resume)
    except ValueError as err:
        return fail("train", err)
    except OSError as err:  # a full disk, a read-only folder: the checkpoints written so far are kept
        where = f" ({err.filename})" if err.filename else ""
        print(
            f"attnlab train: error: {err.strerror or err}{where}; checkpoints written so far are kept in "
            f"{cfg.run_dir}/checkpoints. Resume with: attnlab train --config {cfg.run_dir}/config.yaml --resume",
            file=sys.stderr,
        )
        return 1
    metrics = {k: round(v, 4) for k, v in result.items() if k.startswith("val/")}
    print(f"attnlab train: {result['status']} at step {result['step']} {metrics}")
    message = result["message"] or ""
    if result["status"] == "interrupted":
        print(
            f"attnlab train: {message or 'interrupted'}; checkpoint in {cfg.run_dir}/checkpoints. Resume with: "
            f"attnlab train --config {cfg.run_dir}/config.yaml --resume",
            file=sys.stderr,
        )
        return 143 if "SIGTERM" in message else 130
    if result["status"] == "finished" and message:
        print(f"attnlab train: {message}")
    elif message:
        print(f"attnlab train: {message}; last good checkpoint kept in {cfg.run_dir}/checkpoints")
    return 0 if result["status"] == "finished" else 1


def cmd_sweep(args) -> int:
    from .sweep import parse_sweep_args, run_sweep

    try:
        sweep, dry_run = parse_sweep_args(args.words)
        outcome = run_sweep(sweep, dry_run)
    except ValueError as err:
        return fail("sweep", err)
    print(outcome.report())
    return 0 if outcome.all_finished else 1
