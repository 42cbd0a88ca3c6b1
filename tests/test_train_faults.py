"""Faults during and between training runs: a damaged checkpoint, a resume that cannot start, a
signal mid-run, a disk that fills up while a checkpoint is written. After each, the run dir is
intact or resumable, and the message says what happened."""

from __future__ import annotations

import errno
import json
import os
import signal
import subprocess
import sys
import time

import lightning as L
import pytest
import torch
import yaml
from train_helpers import tiny_run

from attnlab.cli import main
from attnlab.train.config import config_from_dict
from attnlab.train.run import read_result, train


def truncate(path, keep: int = 100) -> None:
    path.write_bytes(path.read_bytes()[:keep])


def snapshot(run_dir) -> dict:
    """Every file in the run dir outside checkpoints/ -> its bytes (and the folders under logs/)."""
    files = {
        p.relative_to(run_dir).as_posix(): p.read_bytes()
        for p in run_dir.rglob("*")
        if p.is_file() and "checkpoints" not in p.parts
    }
    return {"files": files, "logs": sorted(p.name for p in (run_dir / "logs").iterdir())}


@pytest.fixture
def finished(tmp_path):
    """A finished 10-step run (step-5.ckpt, and last.ckpt at step 10) and its config file."""
    run_dir = tmp_path / "run"
    values = tiny_run(run_dir, trainer={"max_steps": 10})
    train(config_from_dict(values))
    config = tmp_path / "run.yaml"
    config.write_text(yaml.safe_dump(values))
    return run_dir, config, values


def test_resume_skips_a_corrupted_last_ckpt_and_says_which_it_used(finished, capsys):
    run_dir, config, _ = finished
    truncate(run_dir / "checkpoints" / "last.ckpt")
    code = main(["train", "--config", str(config), "--trainer.max_steps", "15", "--resume"])
    out = capsys.readouterr().out
    assert code == 0
    assert "skipping unreadable checkpoint last.ckpt" in out and "resuming from step-5.ckpt" in out
    result = read_result(run_dir)
    assert result["status"] == "finished" and result["step"] == 15
    assert result["resumed_from"].endswith("step-5.ckpt")


def test_a_finished_run_resumed_with_its_own_config_is_left_alone(finished, capsys):
    run_dir, config, _ = finished
    truncate(run_dir / "checkpoints" / "last.ckpt")
    before = snapshot(run_dir)
    assert main(["train", "--config", str(config), "--resume"]) == 0
    assert "already finished" in capsys.readouterr().out
    assert snapshot(run_dir) == before


def test_a_resume_with_no_loadable_checkpoint_changes_nothing(finished, capsys):
    run_dir, config, _ = finished
    for ckpt in (run_dir / "checkpoints").glob("*.ckpt"):
        truncate(ckpt)
    before = snapshot(run_dir)
    code = main(["train", "--config", str(config), "--trainer.max_steps", "15", "--resume"])
    err = capsys.readouterr().err
    assert code == 2
    assert "no checkpoint in" in err and "last.ckpt: " in err and "step-5.ckpt: " in err
    assert "nothing in" in err and "was changed" in err
    assert snapshot(run_dir) == before  # result.json (finished), config.yaml, logs: as they were


def test_a_full_disk_during_a_checkpoint_write_keeps_the_previous_checkpoint(tmp_path, monkeypatch, capsys):
    from fsspec.implementations.local import LocalFileOpener

    run_dir = tmp_path / "run"
    config = tmp_path / "run.yaml"
    config.write_text(yaml.safe_dump(tiny_run(run_dir, trainer={"max_steps": 12})))
    real_write, calls = LocalFileOpener.write, {"n": 0}

    def write_until_full(self, data):
        if not str(self.path).endswith(".ckpt"):  # CSV logs go through fsspec too
            return real_write(self, data)
        calls["n"] += 1
        if calls["n"] > 2:  # step 5's checkpoint and last.ckpt go through; step 10's fills the disk
            real_write(self, data[: len(data) // 2])
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_write(self, data)

    monkeypatch.setattr(LocalFileOpener, "write", write_until_full)
    code = main(["train", "--config", str(config)])
    err = capsys.readouterr().err
    assert code == 1
    assert "No space left on device" in err and "Resume with: attnlab train --config" in err
    names = sorted(p.name for p in (run_dir / "checkpoints").iterdir())
    assert names == ["last.ckpt", "step-5.ckpt"]  # no half-written file under a checkpoint's name
    assert torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=False)["global_step"] == 5
    monkeypatch.setattr(LocalFileOpener, "write", real_write)
    assert main(["train", "--config", str(run_dir / "config.yaml"), "--resume"]) == 0
    assert read_result(run_dir)["step"] == 12


@pytest.mark.parametrize(
    "sig, code, name", [(signal.SIGTERM, 143, "SIGTERM"), (signal.SIGINT, 130, "SIGINT")]
)
def test_a_signal_stops_with_a_checkpoint_a_nonzero_exit_and_the_resume_line(tmp_path, sig, code, name):
    run_dir = tmp_path / "run"
    config = tmp_path / "run.yaml"
    config.write_text(
        yaml.safe_dump(tiny_run(run_dir, trainer={"max_steps": 5000, "checkpoint_every": 1000}))
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "attnlab.cli", "train", "--config", str(config)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    metrics = run_dir / "metrics.jsonl"
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and proc.poll() is None:
        if metrics.exists() and len(metrics.read_text().splitlines()) >= 3:
            break
        time.sleep(0.05)
    os.kill(proc.pid, sig)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == code, err[-2000:]
    assert f"Resume with: attnlab train --config {run_dir}/config.yaml --resume" in err
    result = read_result(run_dir)
    assert result["status"] == "interrupted" and result["message"].startswith(f"stopped by {name}")
    step = result["step"]
    assert 3 <= step < 5000 and result["message"].endswith(f"at step {step}")
    ckpt = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=False)
    assert ckpt["global_step"] == step  # the step it stopped at, not the last periodic one
    assert ckpt["loops"]["fit_loop"]["state_dict"]["combined_loader"] == [{"position": step}]  # data position
    rows = [json.loads(line) for line in metrics.read_text().splitlines()]
    assert max(r["step"] for r in rows) <= step


class SigtermAfterTheStopCallback(L.Callback):
    """Plays a SIGTERM that lands just after StopOnSignal looked at step `at`: Lightning's flag goes
    up behind its back, and Lightning raises SIGTERMException before the next step."""

    def __init__(self, at: int):
        self.at = at

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if trainer.global_step == self.at:
            trainer._signal_connector.received_sigterm = True


def test_a_sigterm_the_stop_callback_did_not_see_still_leaves_last_ckpt_at_the_step(tmp_path):
    run_dir = tmp_path / "run"
    cfg = config_from_dict(tiny_run(run_dir, trainer={"max_steps": 50, "checkpoint_every": 1000}))
    result = train(cfg, callbacks=[SigtermAfterTheStopCallback(at=4)])
    assert result["status"] == "interrupted" and result["message"] == "stopped by SIGTERM at step 4"
    ckpt = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=False)
    assert ckpt["global_step"] == 4
    assert ckpt["loops"]["fit_loop"]["state_dict"]["combined_loader"] == [{"position": 4}]
    assert train(cfg, resume=True)["step"] == 50  # and the run goes on from there
