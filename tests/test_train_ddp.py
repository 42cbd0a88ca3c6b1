"""Training past one process: 2 CPU processes under DDP (gloo) train exactly what one process with
the same global batch (2 accumulated batches) trains, never see a batch twice, leave one set of
run files written by rank 0, and a killed 2-process run resumes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import yaml
from safetensors.torch import load_file
from train_helpers import tiny_run

from attnlab.train.data import StepSampler
from attnlab.train.run import read_result

STEPS = 40


def start(config, resume: bool = False) -> subprocess.Popen:
    cmd = [
        sys.executable,
        "-m",
        "attnlab.cli",
        "train",
        "--config",
        str(config),
        *(["--resume"] if resume else []),
    ]
    return subprocess.Popen(
        cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True
    )


def steps_logged(run_dir) -> int:
    path = run_dir / "metrics.jsonl"
    rows = [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []
    return max((r["step"] for r in rows), default=0)


def test_two_processes_train_what_one_process_with_the_same_global_batch_trains(tmp_path):
    ddp_dir, single_dir = tmp_path / "ddp", tmp_path / "single"
    ddp = tmp_path / "ddp.yaml"
    trainer = {"max_steps": STEPS, "log_every": 2, "checkpoint_every": 4, "threads": 1}
    ddp.write_text(
        yaml.safe_dump(
            tiny_run(ddp_dir, trainer={**trainer, "strategy": "ddp", "devices": 2, "accelerator": "cpu"})
        )
    )
    single = tmp_path / "single.yaml"
    single.write_text(yaml.safe_dump(tiny_run(single_dir, trainer={**trainer, "accumulate_grad_batches": 2})))

    # The 2-process run is killed (both processes) between checkpoints, then resumed.
    proc = start(ddp)
    deadline = time.monotonic() + 300
    while steps_logged(ddp_dir) < 10 and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert proc.poll() is None, proc.communicate()[0][-3000:]
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert 10 <= steps_logged(ddp_dir) < STEPS and read_result(ddp_dir) is None
    resumed = start(ddp, resume=True)
    out, _ = resumed.communicate(timeout=600)
    assert resumed.returncode == 0, out[-3000:]
    result = read_result(ddp_dir)
    assert result["status"] == "finished" and result["step"] == STEPS and result["world_size"] == 2
    assert result["resumed_from"] is not None

    done = start(single)
    out, _ = done.communicate(timeout=600)
    assert done.returncode == 0, out[-3000:]
    a, b = load_file(ddp_dir / "hf" / "model.safetensors"), load_file(single_dir / "hf" / "model.safetensors")
    assert max((a[k] - b[k]).abs().max().item() for k in a) < 1e-5  # the same training, to float rounding
    assert abs(result["val/loss"] - read_result(single_dir)["val/loss"]) < 1e-5

    # Rank 0 alone writes the run's files: one log version per attempt, one row per logged step.
    assert sorted(p.name for p in (ddp_dir / "logs").iterdir()) == ["version_0", "version_1"]
    rows = [json.loads(line) for line in (ddp_dir / "metrics.jsonl").read_text().splitlines()]
    train_steps = [r["step"] for r in rows if "train/loss" in r]
    assert train_steps == sorted(set(train_steps))


class FakeTrainer:
    def __init__(self, rank: int, world: int, step: int = 0, accumulate: int = 1):
        self.global_rank, self.world_size, self.global_step, self.accumulate_grad_batches = (
            rank,
            world,
            step,
            accumulate,
        )


def test_ranks_take_disjoint_batches_that_cover_the_run_and_restart_where_it_stopped():
    total = 2 * STEPS
    per_rank = [list(StepSampler(FakeTrainer(r, 2), total)) for r in range(2)]
    assert set(per_rank[0]).isdisjoint(per_rank[1])
    assert sorted(per_rank[0] + per_rank[1]) == list(range(total))  # every batch once
    resumed = [list(StepSampler(FakeTrainer(r, 2, step=7), total)) for r in range(2)]
    assert sorted(resumed[0] + resumed[1]) == list(range(14, total))  # the stream after step 7
    assert per_rank[0][7:] == resumed[0] and per_rank[1][7:] == resumed[1]
