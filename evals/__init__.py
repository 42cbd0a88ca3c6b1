"""evals: the multi-hop long-context suite (DESIGN.md "evals"; issue 5).

Generators (one file per task, seeded, length-exact for a tokenizer): variable_tracking, niah,
facts, copy_string, ngram_lookup (text) and mqar (token-level, k-hop). Scoring: scoring.py.
Runner and training hook: runner.py (`attnlab eval`, `evaluate_suite`). lm-eval: lm_eval_model.py
(`--model attnlab`), lm_eval_data.py + lm_eval_yaml/ (tasks), lm_eval_main.py (launcher).

    from attnlab.evals import SuiteSpec, evaluate_suite, make_sample
"""

from __future__ import annotations

import importlib

_EXPORTS = {
    "SuiteSpec": "suite",
    "evaluate_suite": "runner",
    "run_suite": "runner",
    "run_eval": "runner",
    "compare_models": "runner",
    "make_sample": "registry",
    "byte_tokenizer": "tokenizer",
    "load_tokenizer": "tokenizer",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    # Lazy, so importing one generator (e.g. the trainer's `attnlab.evals.mqar`) stays cheap.
    if name in _EXPORTS:
        return getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
