"""attnlab.study: the main job — train attention variants, evaluate, probe and benchmark them, and
write one report (`attnlab study`). It sits above the other jobs and uses each through its own
public entry points (train sweeps, eval runner, probe runner, crossover benchmark)."""

from __future__ import annotations

from ..common import lazy_exports

_LAZY = {
    "StudyConfig": "config",
    "load_study": "config",
    "StudyError": "runner",
    "run_study": "runner",
}
__all__ = sorted(_LAZY)
__getattr__ = lazy_exports(__name__, _LAZY)
