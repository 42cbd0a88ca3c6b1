"""What a training run shows on the terminal: steps out of max_steps with the latest loss and
tokens/s, and none of Lightning's start-up chatter (accelerator lines, tips, deprecation notes
about its own internals, warnings about things attnlab handles itself)."""

from __future__ import annotations

import logging
import time
import warnings

from lightning.pytorch.callbacks import TQDMProgressBar

# Lightning's info loggers: "GPU available ...", the litlogger tip, "`Trainer.fit` stopped ...",
# "`weights_only` was not set ..." (attnlab prints its own start, resume and end lines).
QUIET_LOGGERS = (
    "lightning.pytorch.utilities.rank_zero",
    "lightning.pytorch.accelerators.cuda",
    "lightning.pytorch.trainer.connectors.checkpoint_connector",
)
QUIET_WARNINGS = (
    r".*isinstance\(treespec, LeafSpec\).*",  # Lightning's own use of a deprecated torch API
    r".*exists and is not empty.*",  # the checkpoint folder of a resumed run
    r".*`training_step` returned `None`.*",  # a step skipped by the non-finite guard (reported)
)


def quiet_lightning() -> None:
    for name in QUIET_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)
    for pattern in QUIET_WARNINGS:
        warnings.filterwarnings("ignore", message=pattern)


class StepProgressBar(TQDMProgressBar):
    """One bar over the run's optimizer steps (Lightning's counts batches of an epoch that a
    step-based run never finishes), with the latest train loss and tokens/s."""

    @property
    def train_description(self) -> str:
        return "train"  # not Lightning's "Training" / "Epoch 0"

    def on_train_epoch_start(self, trainer, *args) -> None:
        bar = self.train_progress_bar
        bar.reset(total=trainer.max_steps)
        bar.n = bar.initial = trainer.global_step
        bar.set_description("train")
        self.started, self.tokens = time.perf_counter(), 0

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        bar = self.train_progress_bar
        if bar is None or bar.disable:
            return
        self.tokens += batch["input_ids"].numel() * trainer.world_size
        if trainer.global_step % self.refresh_rate and trainer.global_step != trainer.max_steps:
            return
        postfix = {}
        if "train/loss" in trainer.callback_metrics:
            postfix["loss"] = f"{float(trainer.callback_metrics['train/loss']):.3f}"
        postfix["tok/s"] = f"{self.tokens / max(time.perf_counter() - self.started, 1e-9):,.0f}"
        bar.n = trainer.global_step
        bar.set_postfix(postfix, refresh=True)

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        pass  # the postfix stays what the last step set
