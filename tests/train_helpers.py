"""Tiny run configs shared by the tests/test_train_*.py files."""

from __future__ import annotations

import copy

TINY_TASK = {
    "seq_len": 32,
    "num_kv_pairs": 2,
    "vocab_size": 32,
    "random_non_queries": False,
    "train_examples": 1024,
    "val_examples": 64,
}


def tiny_run(run_dir, **sections) -> dict:
    """A run config dict: 2-layer d=32 full attention on tiny MQAR, no progress bar, 1 thread."""
    values = {
        "run_dir": str(run_dir),
        "seed": 0,
        "model": {
            "layers": "F",
            "hidden_size": 32,
            "num_attention_heads": 2,
            "extra": {"intermediate_size": 64},
        },
        "data": {"source": "task", "batch_size": 16, "task": dict(TINY_TASK)},
        "optim": {"lr": 3e-3, "warmup_steps": 5},
        "trainer": {
            "max_steps": 20,
            "val_every": 1000,
            "log_every": 1,
            "checkpoint_every": 5,
            "progress_bar": False,
            "threads": 1,
        },
    }
    for name, overrides in sections.items():
        if isinstance(overrides, dict):
            values[name] = {**copy.deepcopy(values.get(name, {})), **overrides}
        else:
            values[name] = overrides
    return values
