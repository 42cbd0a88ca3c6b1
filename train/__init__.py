"""train: one Lightning trainer for every attnlab variant, data pipelines, and sweeps.

    attnlab train --config configs/train/mqar.yaml [--optim.lr 1e-3 …] [--resume]
    attnlab sweep configs/sweeps/zoology_mqar.yaml

config.py (run YAML) -> run.py (one run in its run dir) using data.py (tasks.py: synthetic tasks from
evals/, corpus.py + tokenizer.py: text through `datasets`), module.py (LightningModule), callbacks.py,
metrics.py, schedule.py; sweep.py (grid -> runs) -> executors.py (sequential, processes, submitit)
-> report.py (results.csv, summary.md, plots); params.py (parameter matching); cli.py (commands).
"""
