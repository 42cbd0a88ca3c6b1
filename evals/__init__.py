"""evals: the multi-hop long-context suite.

Generators (one file per task, seeded, length-exact for a tokenizer): variable_tracking, niah,
facts, copy_string, ngram_lookup (text) and mqar (token-level, k-hop). Scoring: scoring.py.
Runner and training hook: runner.py (`attnlab eval`, `evaluate_suite`). lm-eval: lm_eval_model.py
(`--model attnlab`), lm_eval_data.py + lm_eval_yaml/ (tasks), lm_eval_main.py (launcher).

    from attnlab.evals import SuiteSpec, evaluate_suite, make_sample
"""

from __future__ import annotations

from ..common import lazy_exports

_LAZY = {
    "SUITES": "suite",
    "check_mqar_args": "mqar",
    "mqar_examples": "mqar:mqar",
    "mqar_training_options": "mqar:training_options",
    "SuiteSpec": "suite",
    "evaluate_suite": "runner",
    "run_suite": "runner",
    "run_eval": "runner",
    "compare_models": "runner",
    "make_sample": "text_tasks",
    "byte_tokenizer": "tokenizer",
    "load_tokenizer": "tokenizer",
    "build_tokenizer": "tokenizer",
    "encode": "tokenizer",
    "load_model": "loading",
    "resolve_model_dir": "loading",
    "training_mqar_options": "loading",
    "chain_accuracy": "token_tasks",
    "mqar_cell": "token_tasks",
}
__all__ = sorted(_LAZY)
__getattr__ = lazy_exports(__name__, _LAZY)
