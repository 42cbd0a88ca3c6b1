"""A run killed with SIGKILL mid-training and resumed with --resume reaches the same step count and
the same loss trajectory as an uninterrupted run with the same seed."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import yaml
from train_helpers import tiny_run

from attnlab.train.config import config_from_dict
from attnlab.train.run import read_result, train

STEPS = 40


def losses(run_dir) -> dict[int, float]:
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return {r["step"]: r["train/loss"] for r in rows if "train/loss" in r}


def test_sigkill_then_resume_matches_an_uninterrupted_run(tmp_path):
    reference_dir, killed_dir = tmp_path / "reference", tmp_path / "killed"
    train(config_from_dict(tiny_run(reference_dir, trainer={"max_steps": STEPS})))

    config = tmp_path / "killed.yaml"
    config.write_text(yaml.safe_dump(tiny_run(killed_dir, trainer={"max_steps": STEPS})))
    proc = subprocess.Popen(
        [sys.executable, "-m", "attnlab.cli", "train", "--config", str(config)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    # Kill between checkpoints (every 5 steps): after step 12 is logged, before the run ends.
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and proc.poll() is None:
        if (killed_dir / "metrics.jsonl").exists() and max(losses(killed_dir), default=0) >= 12:
            break
        time.sleep(0.02)
    assert proc.poll() is None, "the run ended before it could be killed"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    killed_at = max(losses(killed_dir))
    assert 12 <= killed_at < STEPS
    assert read_result(killed_dir) is None  # not finished
    assert (killed_dir / "checkpoints" / "last.ckpt").exists()

    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "attnlab.cli",
            "train",
            "--config",
            str(killed_dir / "config.yaml"),
            "--resume",
        ],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    resumed = read_result(killed_dir)
    assert resumed["status"] == "finished" and resumed["step"] == STEPS
    assert resumed["resumed_from"].endswith("last.ckpt")

    expected, got = losses(reference_dir), losses(killed_dir)
    assert sorted(got) == sorted(expected) == list(range(1, STEPS + 1))
    for step in expected:
        assert abs(got[step] - expected[step]) < 1e-4 * max(1.0, abs(expected[step])), step
    assert abs(resumed["val/loss"] - read_result(reference_dir)["val/loss"]) < 1e-4


def test_a_run_dir_with_checkpoints_needs_resume(tmp_path):
    values = tiny_run(tmp_path / "run", trainer={"max_steps": 5})
    train(config_from_dict(values))
    try:
        train(config_from_dict(values))
    except ValueError as err:
        assert "--resume" in str(err) and "run_dir" in str(err)
    else:
        raise AssertionError("a second start in the same run_dir must be refused")
