"""A run directory's own files, read and written without Lightning (sweeps and the study check
them before starting anything): result.json, and the hash that says which config finished."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from .config import TrainConfig

# Fields that change how a run executes, not what it computes.
EXECUTION_ONLY = {"progress_bar", "threads"}


def config_hash(cfg: TrainConfig) -> str:
    values = cfg.to_dict()
    values["trainer"] = {k: v for k, v in values["trainer"].items() if k not in EXECUTION_ONLY}
    if cfg.eval.suite is None:  # no suite: the same run as before `eval:` existed (same hash)
        del values["eval"]
    if not cfg.kernels:  # no kernel choice: the same run as before `kernels:` existed (same hash)
        del values["kernels"]
    return hashlib.sha256(json.dumps(values, sort_keys=True).encode()).hexdigest()[:16]


def read_result(run_dir: Path) -> dict | None:
    """The run's result.json, or None when there is none (or it is unreadable: not finished)."""
    path = Path(run_dir) / "result.json"
    try:
        return json.loads(path.read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None


def write_json(path: Path, values: dict) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(values, indent=2) + "\n")
    tmp.replace(path)  # atomic: a reader never sees half a result
