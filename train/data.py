"""Training data: build train/val tensors (synthetic task or packed text) and serve them so that a
resumed run sees exactly the batches an uninterrupted one would.

Batch g of a run is a pure function of (seed, g): rows are reshuffled once per pass over the data
with a generator seeded by (seed, pass). The sampler starts at the batch after the restored
`global_step`, so resuming after a SIGKILL continues the same stream (Lightning itself does not
fast-forward a plain DataLoader mid-epoch). Under DDP, rank r of W takes batches g ≡ r (mod W).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from ..evals import build_tokenizer, encode
from .corpus import load_documents, pack, sample_documents, split_rows
from .tasks import TASKS


@dataclass
class Slice:
    """One homogeneous part of the data: a task slice (e.g. MQAR 256x16) or the text corpus."""

    name: str
    train_ids: torch.Tensor  # [N, T]
    train_labels: torch.Tensor  # [N, T], -100 where no loss
    val_ids: torch.Tensor  # [M, T]
    val_labels: torch.Tensor  # [M, T]
    batch_size: int
    start_step: int = 0  # optimizer step from which this slice's batches are drawn

    @property
    def seq_len(self) -> int:
        return self.train_ids.shape[1]


@dataclass
class DataTensors:
    slices: list[Slice]
    vocab_size: int
    tokenizer: object | None  # HF tokenizer for text, None for token-level tasks

    @property
    def seq_len(self) -> int:
        return max(s.seq_len for s in self.slices)


def build_data(data, run_dir: Path, seed: int) -> DataTensors:
    if data.source == "task":
        slices = []
        for i, (name, task, batch_size, start_step) in enumerate(data.task.slices(data.batch_size)):
            make = TASKS.get(task.name, where="data.task.name")
            # Distinct streams for every (slice, split) and every seed: 2*(seed*64 + i) (+1 for val).
            stream = 2 * (seed * 64 + i)
            train_ids, train_labels = make(task, task.train_examples, stream)
            val_ids, val_labels = make(task, task.val_examples, stream + 1)
            slices.append(Slice(name, train_ids, train_labels, val_ids, val_labels, batch_size, start_step))
        return DataTensors(slices, data.task.vocab_size, None)
    text = data.text
    docs = sample_documents(load_documents(text), seed, text.max_chars)
    tokenizer = build_tokenizer(
        text.tokenizer, run_dir / "tokenizer", lambda: iter(docs), text.bpe_vocab_size
    )
    rows = pack(encode(tokenizer, docs), text.seq_len, tokenizer.eos_token_id)
    train, val = split_rows(rows, text.val_fraction)
    # Labels equal the inputs: the model shifts them internally.
    return DataTensors([Slice("text", train, train, val, val, data.batch_size)], len(tokenizer), tokenizer)


class StepBatches(Dataset):
    """Item g = the g-th training batch of the run (dict of input_ids, labels [B, T]).

    Batches cycle round-robin through the slices active at that step (a slice joins at its
    start_step); within a slice, rows are reshuffled once per pass. The schedule is computed once,
    so batch g never depends on anything but (slices, seed, g)."""

    def __init__(self, slices: list[Slice], seed: int, total: int, batches_per_step: int = 1):
        for s in slices:
            if len(s.train_ids) < s.batch_size:
                raise ValueError(
                    f"data.batch_size = {s.batch_size} exceeds the {len(s.train_ids)} training rows of "
                    f"{s.name}; lower it or add data"
                )
        self.slices, self.seed, self.total = slices, seed, total
        self.slice_of, self.local = self.schedule([s.start_step * batches_per_step for s in slices], total)
        self._perms: dict[tuple[int, int], torch.Tensor] = {}

    @staticmethod
    def schedule(starts: list[int], total: int) -> tuple[np.ndarray, np.ndarray]:
        """-> (slice of batch g, how many earlier batches that slice served) for g < total."""
        slice_of, local = np.zeros(total, dtype=np.int64), np.zeros(total, dtype=np.int64)
        served = [0] * len(starts)
        active: list[int] = []
        for g in range(total):
            if len(active) < len(starts):
                active = [k for k, start in enumerate(starts) if start <= g]
            k = active[g % len(active)]
            slice_of[g], local[g] = k, served[k]
            served[k] += 1
        return slice_of, local

    def __len__(self) -> int:
        return self.total

    def order(self, k: int, epoch: int) -> torch.Tensor:
        if (k, epoch) not in self._perms:
            self._perms = {key: p for key, p in self._perms.items() if key[0] != k}  # one pass kept per slice
            gen = torch.Generator().manual_seed((self.seed * 1_000_003 + epoch) * 64 + k)
            self._perms[(k, epoch)] = torch.randperm(len(self.slices[k].train_ids), generator=gen)
        return self._perms[(k, epoch)]

    def __getitem__(self, g: int) -> dict[str, torch.Tensor]:
        k = int(self.slice_of[g])
        s = self.slices[k]
        epoch, j = divmod(int(self.local[g]), len(s.train_ids) // s.batch_size)  # a pass skips the short tail
        rows = self.order(k, epoch)[j * s.batch_size : (j + 1) * s.batch_size]
        return {"input_ids": s.train_ids[rows], "labels": s.train_labels[rows]}


class StepSampler(Sampler):
    """Yields this rank's batch indices from the restored step on (read when iteration starts)."""

    def __init__(self, trainer, total: int):
        self.trainer, self.total = trainer, total
        self.restored: int | None = None  # the position a checkpoint saved (StepLoader)

    def step_position(self) -> int:
        """Index of the first batch of the next optimizer step, over all ranks."""
        t = self.trainer
        return t.global_step * t.accumulate_grad_batches * t.world_size

    def start(self) -> int:
        position = self.restored if self.restored is not None else self.step_position()
        return position + self.trainer.global_rank

    def __iter__(self):
        start, self.restored = self.start(), None
        return iter(range(start, self.total, self.trainer.world_size))

    def __len__(self) -> int:
        # The whole run's length, not what is left: Lightning restores its batch counter on resume
        # and ends the epoch at len(), so the run stays one epoch either way.
        return -(-self.total // self.trainer.world_size)


class StepLoader(DataLoader):
    """The train loader, stateful for Lightning: the position in the batch stream (the first batch
    of the next optimizer step) goes into every checkpoint, and a restored run starts there."""

    def state_dict(self) -> dict:
        return {"position": self.sampler.step_position()}

    def load_state_dict(self, state: dict) -> None:
        self.sampler.restored = state.get("position")


class Rows(Dataset):
    def __init__(self, ids: torch.Tensor, labels: torch.Tensor):
        self.ids, self.labels = ids, labels

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {"input_ids": self.ids[i], "labels": self.labels[i]}


class TrainData(L.LightningDataModule):
    def __init__(self, tensors: DataTensors, seed: int):
        super().__init__()
        self.tensors, self.seed = tensors, seed

    def train_dataloader(self) -> DataLoader:
        t = self.trainer
        total = t.max_steps * t.accumulate_grad_batches * t.world_size
        batches = StepBatches(self.tensors.slices, self.seed, total, t.accumulate_grad_batches * t.world_size)
        return StepLoader(batches, batch_size=None, sampler=StepSampler(t, total))

    def val_dataloader(self) -> list[DataLoader]:
        """One loader per slice, in slice order (the module names its metrics by slice)."""
        return [
            DataLoader(Rows(s.val_ids, s.val_labels), batch_size=s.batch_size) for s in self.tensors.slices
        ]
