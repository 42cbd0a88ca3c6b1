"""attnlab.study: the main job — train attention variants, evaluate, probe and benchmark them, and
write one report (`attnlab study`). It sits above the other jobs and uses each through its own
public entry points (train sweeps, eval runner, probe runner, crossover benchmark)."""

from .config import StudyConfig, load_study
from .runner import StudyError, run_study

__all__ = ["StudyConfig", "StudyError", "load_study", "run_study"]
