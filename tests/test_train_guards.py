"""Guards and errors: a non-finite loss (or gradient) stops the run cleanly and keeps the last good
checkpoint; bad config values name the field and the allowed values; Lightning strategies pass
through to the Trainer."""

from __future__ import annotations

import subprocess
import sys

import lightning as L
import pytest
import torch
from train_helpers import tiny_run

from attnlab.cli import main
from attnlab.train.config import config_from_dict
from attnlab.train.run import read_result, train


class PoisonAt(L.Callback):
    """Makes step `step` produce NaN logits (kind="loss") or NaN gradients (kind="grad"), once."""

    def __init__(self, step: int, kind: str):
        self.step, self.kind, self.handle = step, kind, None

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if trainer.global_step != self.step:
            return
        if self.kind == "loss":
            self.handle = pl_module.model.lm_head.register_forward_hook(lambda m, i, out: out * float("nan"))
        else:
            self.handle = pl_module.model.lm_head.weight.register_hook(lambda g: g * float("nan"))

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if self.handle is not None:
            self.handle.remove()
            self.handle = None


@pytest.mark.parametrize("kind", ["loss", "grad"])
def test_non_finite_stops_the_run_and_keeps_the_last_good_checkpoint(kind, tmp_path):
    values = tiny_run(tmp_path, trainer={"max_steps": 20, "checkpoint_every": 5})
    result = train(config_from_dict(values), callbacks=[PoisonAt(7, kind)])
    assert result["status"] == "stopped"
    assert f"non-finite {'loss' if kind == 'loss' else 'gradient'}" in result["message"]
    assert "step 7" in result["message"]
    assert read_result(tmp_path)["status"] == "stopped"
    assert not (tmp_path / "hf").exists()  # an unfinished run is not exported
    ckpt = torch.load(tmp_path / "checkpoints" / "last.ckpt", weights_only=False)
    assert ckpt["global_step"] == 5  # nothing was saved after the bad step
    assert all(torch.isfinite(t).all() for t in ckpt["state_dict"].values())


@pytest.mark.parametrize(
    "words, field, allowed",
    [
        (["--optim.schedule", "linear"], "optim.schedule", "cosine"),
        (["--trainer.precision", "fp8"], "trainer.precision", "bf16-mixed"),
        (["--trainer.strategy", "horovod"], "trainer.strategy", "ddp"),
        (["--data.source", "web"], "data.source", "task"),
        (["--data.task.name", "nope"], "data.task.name", "mqar"),
        (["--data.task.seq_len", "8"], "data.task.seq_len", "seq_len >="),
        (["--model.layers", "FX"], "layers", "allowed letters"),
        (["--model.preset", "llama"], "model.preset", "minimax01"),
        (["--data.text.tokenizer", "/no/such/dir", "--data.source", "text"], "data.text.tokenizer", "bpe"),
    ],
)
def test_bad_values_exit_2_naming_the_field_and_allowed_values(words, field, allowed, tmp_path, capsys):
    code = main(["train", "--run_dir", str(tmp_path / "run"), "--data.text.max_chars", "20000", *words])
    err = capsys.readouterr().err
    assert code == 2 and field in err and allowed in err, err


def test_unknown_option_is_rejected(tmp_path, capsys):
    assert main(["train", "--optim.learning_rate", "1e-3"]) == 2
    assert "optim.learning_rate" in capsys.readouterr().err


def test_lightning_strategy_passes_through_to_the_trainer(tmp_path):
    config = tmp_path / "run.yaml"
    import yaml

    values = tiny_run(
        tmp_path / "run", trainer={"max_steps": 2, "strategy": "ddp", "devices": 1, "accelerator": "cpu"}
    )
    config.write_text(yaml.safe_dump(values))
    proc = subprocess.run(
        [sys.executable, "-m", "attnlab.cli", "train", "--config", str(config)],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = read_result(tmp_path / "run")
    assert result["strategy"] == "DDPStrategy" and result["world_size"] == 1
