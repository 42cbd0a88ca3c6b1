"""lm-eval's own CLI, with attnlab registered first.

lm-eval 0.4.x resolves `--model NAME` against its built-in registry before any user code runs and
has no plugin entry points (EleutherAI/lm-evaluation-harness#1621, #3282), so a plain `lm_eval
--model attnlab` cannot find an out-of-tree model. This launcher imports the adapter (which
registers `attnlab`) and then hands the unchanged arguments to lm-eval's CLI:

    python -m attnlab.evals.lm_eval_main --model attnlab --model_args pretrained=PATH \
        --tasks attnlab_multihop --include_path "$(python -m attnlab.evals.lm_eval_data)"
    attnlab lm-eval --model attnlab --model_args pretrained=PATH --tasks attnlab_multihop

--include_path defaults to the packaged task YAMLs when not given.
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
    cli_evaluate()
    return 0


if __name__ == "__main__":
    sys.exit(main())
