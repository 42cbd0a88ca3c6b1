"""Which checkpoint a resumed run starts from, and stopping on a signal with a checkpoint.

Checkpoints are written atomically (Lightning writes through an fsspec transaction: a temporary
file renamed into place), so a kill during a write leaves the previous file. A file can still be
damaged afterwards (a full disk, a copy cut short): `resume_checkpoint` loads the candidates
newest first, last.ckpt then step-N.ckpt by N, and returns the first that loads, with what was
wrong with the ones before it.
"""

from __future__ import annotations

import re
import signal
import threading
from pathlib import Path

import lightning as L
import torch

SIGNAL_NAMES = {signal.SIGINT: "SIGINT (Ctrl-C)", signal.SIGTERM: "SIGTERM"}


def candidates(ckpt_dir: Path) -> list[Path]:
    """last.ckpt first, then the periodic step-N.ckpt files, newest first."""

    def step(path: Path) -> int:
        match = re.fullmatch(r"step-(\d+)(-v\d+)?\.ckpt", path.name)
        return int(match[1]) if match else -1

    periodic = sorted((p for p in ckpt_dir.glob("*.ckpt") if p.name != "last.ckpt"), key=step, reverse=True)
    last = ckpt_dir / "last.ckpt"
    return ([last] if last.exists() else []) + periodic


def check_checkpoint(path: Path) -> None:
    """Raises ValueError saying why `path` is not a loadable Lightning checkpoint."""
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as err:  # noqa: BLE001 - torch raises many kinds for a damaged file
        raise ValueError(f"{type(err).__name__}: {str(err).splitlines()[0][:120]}") from None
    if not isinstance(ckpt, dict) or "state_dict" not in ckpt or "global_step" not in ckpt:
        raise ValueError("not a Lightning checkpoint (no state_dict / global_step)")


def resume_checkpoint(ckpt_dir: Path) -> tuple[Path | None, list[str]]:
    """-> (the newest checkpoint that loads or None, ['name: what is wrong', ...] for those skipped)."""
    skipped = []
    for path in candidates(ckpt_dir) if ckpt_dir.is_dir() else []:
        try:
            check_checkpoint(path)
        except ValueError as err:
            skipped.append(f"{path.name}: {err}")
            continue
        return path, skipped
    return None, skipped


class StopOnSignal(L.Callback):
    """Ctrl-C and SIGTERM end the run after the current optimizer step, with a checkpoint of it.

    The first Ctrl-C asks for the stop (a second one interrupts at once); SIGTERM is Lightning's
    (it raises SIGTERMException, a SystemExit, at the next step, which train() turns into an
    "interrupted" result). Either way last.ckpt holds the step the run stopped at: a SIGTERM that
    Lightning acts on before this callback sees it (one that lands after this step's
    on_train_batch_end, in validation, or between accumulated batches) is saved by `save_if_missed`."""

    def __init__(self, last: Path):
        self.last = last
        self.signal: int | None = None
        self.saved = False
        self.previous = None

    def on_train_start(self, trainer, pl_module) -> None:
        if threading.current_thread() is threading.main_thread():
            self.previous = signal.signal(signal.SIGINT, self.on_sigint)

    def on_sigint(self, signum, frame) -> None:
        if self.signal is not None:
            raise KeyboardInterrupt
        self.signal = signal.SIGINT

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if self.signal is None and trainer.received_sigterm:
            self.signal = signal.SIGTERM
        stepped = (batch_idx + 1) % trainer.accumulate_grad_batches == 0
        if self.signal is not None and stepped and not trainer.should_stop:
            trainer.save_checkpoint(self.last)
            self.saved = True
            trainer.should_stop = True

    def save_if_missed(self, trainer) -> None:
        """After Lightning's SIGTERMException: the last finished optimizer step, unless saved above.
        (The exception only comes between steps, so the weights and the data position agree.)"""
        self.signal = self.signal or signal.SIGTERM
        if not self.saved:
            trainer.save_checkpoint(self.last)
            self.saved = True

    def teardown(self, trainer, pl_module, stage: str) -> None:
        if self.previous is not None:
            signal.signal(signal.SIGINT, self.previous)
            self.previous = None

    @property
    def reason(self) -> str | None:
        return None if self.signal is None else f"stopped by {SIGNAL_NAMES[self.signal]}"
