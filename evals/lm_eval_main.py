"""lm-eval's own CLI with `--include_path` defaulting to the packaged task YAMLs.

Plain `lm_eval --model attnlab ... --include_path "$(python -m attnlab.evals.lm_eval_data)"` works
once attnlab is installed (its attnlab-lm-eval.pth registers the model: lm-eval 0.4.x has no plugin
entry points, EleutherAI/lm-evaluation-harness#1621, #3282; see evals/lm_eval_plugin/). This
launcher also registers the model itself (for installs without the .pth, e.g. `--target` dirs)
and saves typing the include path:

    attnlab lm-eval --model attnlab --model_args pretrained=PATH --tasks attnlab_multihop
    python -m attnlab.evals.lm_eval_main ...   (the same)
"""

from __future__ import annotations

import sys


def main(argv: list[str] | None = None) -> int:
    from lm_eval.__main__ import cli_evaluate

    from . import lm_eval_model  # noqa: F401  (registers --model attnlab)
    from .lm_eval_data import include_path

    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] not in ("run", "ls", "validate", "-h", "--help"):
        argv.insert(0, "run")  # lm-eval's legacy form, made explicit
    if len(argv) > 1 and not {"--include_path", "-h", "--help"} & set(argv):
        argv += ["--include_path", str(include_path())]
    sys.argv = ["lm-eval", *argv]
    try:
        cli_evaluate()
    except ValueError as err:  # attnlab's own (a task's data, the model's arguments): one line
        if not str(err).startswith("attnlab "):
            raise
        print(f"attnlab lm-eval: error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
