"""The named suites: task lists (a light module, so the CLI can list them without loading the
tasks; evals/suite.py builds SuiteSpec on them)."""

from __future__ import annotations

SUITES: dict[str, tuple[str, ...]] = {
    # multi-hop reasoning over long context, with single-hop retrieval (niah_multikey) as control
    "multihop": ("mqar", "variable_tracking", "facts", "niah_multikey"),
    "ruler": ("niah_single", "niah_multikey", "niah_multivalue", "niah_multiquery", "variable_tracking"),
    "copy": ("copy", "ngram_lookup"),
    "mqar": ("mqar",),
    "text": (
        "variable_tracking",
        "facts",
        "niah_single",
        "niah_multikey",
        "niah_multivalue",
        "niah_multiquery",
        "copy",
        "ngram_lookup",
    ),
}
