"""The `attnlab` command: one subcommand per job (README "Commands").

Each job's module exposes `register(subparsers)`, which adds its subcommand(s) and sets
`func(args) -> exit code`. Adding a job = one module + its line(s) in COMMANDS. Only the modules of
the command being run are imported (a job module may pull in torch and transformers), so
`attnlab --help` answers in a fraction of a second and `attnlab eval --help` without torch.
"""

from __future__ import annotations

import argparse
import importlib
import sys

# command -> (the modules that add it, its one-line help for the command list)
COMMANDS: dict[str, tuple[tuple[str, ...], str]] = {
    "study": (
        ("attnlab.study.cli",),
        "the main job: train the attention variants, eval, probe, crossover; one report",
    ),
    "train": (("attnlab.train.cli",), "train one model from a YAML run config (attnlab train --help)"),
    "sweep": (("attnlab.train.cli",), "expand a sweep YAML into runs, run the unfinished ones, aggregate"),
    "eval": (("attnlab.evals.cli",), "run the eval suite (accuracy by task x length x hops) on a model"),
    "lm-eval": (("attnlab.evals.cli",), "lm-eval's CLI with the `attnlab` model and the attnlab_* tasks"),
    "probe": (("attnlab.probes.cli",), "score attention heads (retrieval, induction, ...) and ablate them"),
    "serve": (("attnlab.serve.cli",), "OpenAI-compatible HTTP server (completions, chat, metrics)"),
    "bench": (
        ("attnlab.kernels.cli", "attnlab.train.bench_cli", "attnlab.serve.cli"),
        "benchmarks (kernels, train-step, serve, crossover, state-precision, prefix, spec)",
    ),
    "kernels": (("attnlab.kernels.cli",), "kernel harness: op definitions and backends"),
    "demo": (("attnlab.serve.demo",), "build one model of each mixer family, generate with its cache"),
    "convert": (("attnlab.convert",), "attnlab full-attention model <-> Hugging Face Llama folder"),
    "quantize": (
        ("attnlab.quantize",),
        "INT4 weight-only model folder (PTQ, or the conversion of a QAT run)",
    ),
}
COMMAND_MODULES = list(dict.fromkeys(m for modules, _ in COMMANDS.values() for m in modules))


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The full parser (every job registered), or for `command` only its modules' subcommands,
    with the other commands listed by name and help."""
    parser = argparse.ArgumentParser(prog="attnlab", description="attnlab: attention architectures lab")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    modules = COMMANDS[command][0] if command in COMMANDS else COMMAND_MODULES
    if command is not None and command not in COMMANDS:
        modules = ()  # an unknown word: the listing is enough for argparse's "invalid choice"
    for name in modules:
        importlib.import_module(name).register(sub)
    for name, (_, text) in COMMANDS.items():
        if name not in sub.choices:
            sub.add_parser(name, help=text, add_help=False)
    return parser


def command_word(argv: list[str]) -> str:
    """The first word that is not an option ('' when there is none: `attnlab --help`)."""
    return next((w for w in argv if not w.startswith("-")), "")


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = build_parser(command_word(argv)).parse_args(argv)
    try:
        if getattr(args, "kernels", None) is None:
            return args.func(args)
        from attnlab.kernels import kernel_choice

        with kernel_choice(args.kernels):  # a job's --kernels holds for the whole command
            return args.func(args)
    except OSError as err:  # a read-only or full output folder, a missing file: one line, not a traceback
        where = f": {err.filename}" if err.filename else ""
        print(f"attnlab {args.command}: error: {err.strerror or err}{where}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
