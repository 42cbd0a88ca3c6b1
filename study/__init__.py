"""attnlab.study: the main job — train attention variants, evaluate, probe and benchmark them, and
write one report (`attnlab study`). It sits above the other jobs and uses each through its own
public entry points (train sweeps, eval runner, probe runner, crossover benchmark)."""

# Names load on first use (PEP 562), so commands that only need one part (and `attnlab --help`)
# do not import everything.
from __future__ import annotations

import importlib

__all__ = ["StudyConfig", "StudyError", "load_study", "run_study"]

_LAZY = {
    "StudyConfig": "config",
    "load_study": "config",
    "StudyError": "runner",
    "run_study": "runner",
}


def __getattr__(name: str):
    if name in _LAZY:
        value = getattr(importlib.import_module(f"{__name__}.{_LAZY[name]}"), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
