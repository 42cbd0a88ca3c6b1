"""A training run's terminal: one progress bar over steps out of max_steps with the loss and
tokens/s, and none of Lightning's start-up chatter."""

from __future__ import annotations

import subprocess
import sys

import yaml
from train_helpers import tiny_run

CHATTER = (
    "GPU available",
    "TPU available",
    "litlogger",
    "LeafSpec",
    "weights_only",
    "Epoch 0",
    "Training:",
    "not resumable",
)


def test_the_terminal_shows_steps_loss_and_throughput_and_no_chatter(tmp_path):
    config = tmp_path / "run.yaml"
    values = tiny_run(tmp_path / "run", trainer={"max_steps": 12, "log_every": 4, "progress_bar": True})
    config.write_text(yaml.safe_dump(values))
    done = subprocess.run(
        [sys.executable, "-m", "attnlab.cli", "train", "--config", str(config)],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    text = (done.stdout + done.stderr).replace("\r", "\n")
    assert not [c for c in CHATTER if c in text], text[-3000:]
    bars = [line for line in text.splitlines() if line.startswith("train:")]
    assert any("12/12" in line and "loss=" in line and "tok/s=" in line for line in bars), bars[-3:]
