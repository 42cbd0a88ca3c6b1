"""The `--kernels` option every job command takes (imports no torch until the option is used)."""

from __future__ import annotations

HELP = (
    "kernel choice: OP=BACKEND pins (e.g. lightning_prefill=torch_chunk) and default=builtin|ranked "
    "(ranked: follow this machine's `attnlab kernels check` ranking); the map used is written into "
    "the outputs. Default: every op's built-in choice for the device."
)


def kernels_arg(text: str):
    from .dispatch import kernel_choice_arg

    return kernel_choice_arg(text)


def add_kernels_option(parser) -> None:
    """`--kernels`; attnlab's main applies the parsed choice around the command (attnlab/cli.py)."""
    parser.add_argument("--kernels", type=kernels_arg, default=None, metavar="OP=BACKEND,...", help=HELP)
