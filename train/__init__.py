"""train: one Lightning trainer for every attnlab variant, data pipelines, and sweeps.

    attnlab train --config configs/train/mqar.yaml [--optim.lr 1e-3 …] [--resume]
    attnlab sweep configs/sweeps/zoology_mqar.yaml

config.py (run YAML: sections.py, data_sections.py, config_io.py) -> run.py (one run in its run
dir; run_setup.py builds its Lightning objects) using data.py (tasks.py: synthetic tasks from
evals/, corpus.py: text through `datasets`, tokenizers from evals/), module.py (LightningModule), callbacks.py,
metrics.py, schedule.py; sweep.py (grid -> runs) -> executors.py (sequential, processes, submitit)
-> sweep_report.py (results.csv, summary.md, plots); params.py (parameter matching); cli.py (commands).
"""

from __future__ import annotations

from ..common import lazy_exports

_LAZY = {
    "TrainConfig": "config",
    "check_yaml_file": "config",
    "parse_args": "config",
    "train": "run",
    "write_json": "run_files",
    "read_result": "run_files",
    "config_hash": "run_files",
    "threads_per_run": "executors",
    "stdlib_sources": "corpus",
    "build_data": "data",
    "ExecutorSection": "sweep",
    "SummarySection": "sweep",
    "SweepConfig": "sweep",
    "expand": "sweep",
    "find_config": "sweep",
    "run_sweep": "sweep",
}
__all__ = sorted(_LAZY)
__getattr__ = lazy_exports(__name__, _LAZY)
