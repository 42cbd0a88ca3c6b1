"""The `attnlab` command: one subcommand per job (README "Commands").

Each job's module exposes `register(subparsers)`, which adds its subcommand(s) and sets
`func(args) -> exit code`. Adding a job = one module + one line in COMMAND_MODULES. Modules are
imported lazily per invocation so `attnlab --help` stays fast.
"""

from __future__ import annotations

import argparse
import importlib
import sys

COMMAND_MODULES = [
    "attnlab.study.cli",
    "attnlab.archs.demo",
    "attnlab.train.cli",
    "attnlab.evals.cli",
    "attnlab.kernels.cli",
    "attnlab.probes.cli",
    "attnlab.serve.cli",
    "attnlab.convert",
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="attnlab", description="attnlab: attention architectures lab")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(sub)
    return parser


def positive_int(text: str) -> int:
    """argparse type: an integer > 0, with an error that names the value."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer; expected a positive integer") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"{value} is not positive; expected a positive integer")
    return value


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except OSError as err:  # a read-only or full output folder, a missing file: one line, not a traceback
        where = f": {err.filename}" if err.filename else ""
        print(f"attnlab {args.command}: error: {err.strerror or err}{where}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
