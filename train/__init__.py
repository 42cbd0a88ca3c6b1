"""train: one Lightning trainer for every attnlab variant, data pipelines, and sweeps.

    attnlab train --config configs/train/mqar.yaml [--optim.lr 1e-3 …] [--resume]
    attnlab sweep configs/sweeps/zoology_mqar.yaml

config.py (run YAML: sections.py, data_sections.py, config_io.py) -> run.py (one run in its run
dir; run_setup.py builds its Lightning objects) using data.py (tasks.py: synthetic tasks from
evals/, corpus.py: text through `datasets`, tokenizers from evals/), module.py (LightningModule), callbacks.py,
metrics.py, schedule.py; sweep.py (grid -> runs) -> executors.py (sequential, processes, submitit)
-> report.py (results.csv, summary.md, plots); params.py (parameter matching); cli.py (commands).
"""
