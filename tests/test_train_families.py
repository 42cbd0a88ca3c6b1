"""Every mixer family, trained by the Lightning trainer on MQAR, learns it: the loss falls far
below its start and answer accuracy is far above chance."""

from __future__ import annotations

import json

import pytest
from train_helpers import tiny_run

from attnlab.train.config import config_from_dict
from attnlab.train.run import train

FAMILIES = {
    "full": {"layers": "F"},
    "mla": {"layers": "M"},
    "lightning": {"layers": "L", "mixers": {"L": {"type": "lightning", "block_size": 16}}},
    "swa": {"layers": "S", "mixers": {"S": {"type": "swa", "window": 16}}},  # half the sequence
    "intra": {"layers": "I"},  # one sliding-window head + one full head
}
VALUES = 8  # vocab 16: keys 1..7, values 8..15 -> chance accuracy 1/8


@pytest.mark.parametrize("family", FAMILIES)
def test_family_learns_mqar(family, tmp_path):
    values = tiny_run(
        tmp_path,
        model={
            **FAMILIES[family],
            "hidden_size": 32,
            "num_attention_heads": 2,
            "extra": {"intermediate_size": 64},
        },
        data={
            "batch_size": 32,
            "task": {
                "seq_len": 32,
                "num_kv_pairs": 2,
                "vocab_size": 2 * VALUES,
                "random_non_queries": False,
                "train_examples": 8192,
                "val_examples": 128,
            },
        },
        optim={"lr": 3e-3, "warmup_steps": 10},
        trainer={"max_steps": 200, "log_every": 20, "checkpoint_every": 200, "val_every": 200},
    )
    result = train(config_from_dict(values))
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    curve = [r["train/loss"] for r in rows if "train/loss" in r]  # means over 20-step windows
    assert result["status"] == "finished" and len(curve) == 10
    assert curve[-1] < 0.4 * curve[0], curve
    assert result["val/acc"] > 3 / VALUES, result
