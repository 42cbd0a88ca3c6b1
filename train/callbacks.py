"""Run-dir callbacks: the step-by-step metrics log (metrics.jsonl) with throughput, checkpoints
that are never written after the run was stopped by a guard, and QAT's fake-quant switch."""

from __future__ import annotations

import json
import time
from pathlib import Path

import lightning as L
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.trainer.states import TrainerFn

from ..quant import set_fake_quant


class MetricsLog(L.Callback):
    """Appends one JSON row per `every` optimizer steps (train loss/acc averaged over the window,
    lr, tokens/s) and one per validation. On resume, rows past the restored step are dropped: they
    came from steps after the last checkpoint, which are about to be recomputed."""

    def __init__(self, path: Path, every: int):
        self.path, self.every = path, every
        self.window: list[tuple[float, float]] = []
        self.tokens, self.total_tokens, self.train_seconds = 0, 0, 0.0
        self.started = time.perf_counter()

    def on_train_start(self, trainer, pl_module) -> None:
        if not trainer.is_global_zero:
            return
        if self.path.exists():
            rows = [json.loads(line) for line in self.path.read_text().splitlines() if line.strip()]
            keep = [r for r in rows if r["step"] <= trainer.global_step]
            self.path.write_text("".join(json.dumps(r) + "\n" for r in keep))
        self.started = time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if outputs is None:  # step skipped by the non-finite guard
            return
        self.tokens += batch["input_ids"].numel() * trainer.world_size
        metrics = trainer.callback_metrics
        self.window.append((float(metrics["train/loss"]), float(metrics["train/acc"])))
        stepped = (batch_idx + 1) % trainer.accumulate_grad_batches == 0
        if stepped and trainer.global_step % self.every == 0:
            now = time.perf_counter()
            seconds = now - self.started
            self.total_tokens += self.tokens
            self.train_seconds += seconds
            n = len(self.window)
            self.write(
                {
                    "step": trainer.global_step,
                    "train/loss": sum(w[0] for w in self.window) / n,
                    "train/acc": sum(w[1] for w in self.window) / n,
                    "lr": float(metrics["lr"]),
                    "tokens_per_s": self.tokens / max(seconds, 1e-9),
                },
                trainer,
            )
            self.window, self.tokens, self.started = [], 0, now

    def on_validation_start(self, trainer, pl_module) -> None:
        self.val_started = time.perf_counter()

    def on_validation_end(self, trainer, pl_module) -> None:
        # Validation time is not training time: shift the throughput window past it.
        self.started += time.perf_counter() - getattr(self, "val_started", time.perf_counter())
        if trainer.sanity_checking or trainer.state.fn != TrainerFn.FITTING:
            return  # the final trainer.validate() goes to result.json instead
        row = {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("val/")}
        row |= getattr(pl_module, "suite_metrics", {})  # only when the suite ran at this validation
        self.write({"step": trainer.global_step, **row}, trainer)

    def mean_tokens_per_s(self) -> float:
        return self.total_tokens / self.train_seconds if self.train_seconds else 0.0

    def write(self, row: dict, trainer) -> None:
        if trainer.is_global_zero:
            with self.path.open("a") as f:
                f.write(json.dumps(row) + "\n")


class GuardedCheckpoint(ModelCheckpoint):
    """ModelCheckpoint that saves nothing once a guard stopped the run, so the files on disk stay
    the last good state."""

    @staticmethod
    def stopped(pl_module) -> bool:
        return getattr(pl_module, "stop_reason", None) is not None

    def on_train_batch_end(self, trainer, pl_module, *args, **kwargs) -> None:
        if not self.stopped(pl_module):
            super().on_train_batch_end(trainer, pl_module, *args, **kwargs)

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        if not self.stopped(pl_module):
            super().on_train_epoch_end(trainer, pl_module)

    def on_validation_end(self, trainer, pl_module) -> None:
        if not self.stopped(pl_module):
            super().on_validation_end(trainer, pl_module)


class FakeQuantSchedule(L.Callback):
    """QAT (`quant: {qat: true, start_step: S}`): torchao's fake quant off while fewer than S
    optimizer steps are done, on from step S, in training and in validation alike, so validation
    after S (and the final one) measures the quantized model. Set from trainer.global_step before
    every batch, so a resumed run is in the right state at once."""

    def __init__(self, start_step: int):
        self.start_step = start_step

    def switch(self, trainer, pl_module) -> None:
        set_fake_quant(pl_module.model, trainer.global_step >= self.start_step)

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self.switch(trainer, pl_module)

    def on_validation_start(self, trainer, pl_module) -> None:
        self.switch(trainer, pl_module)
