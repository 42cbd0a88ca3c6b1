"""The `data:` section of a run config: where the training tokens come from, a synthetic task
(evals/, through train/tasks.py) or a text corpus (train/corpus.py)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path

from ..common import check_choice, check_fraction, check_positive
from ..evals import check_mqar_args
from .tasks import TASKS

DATA_SOURCES = ("task", "text")
MIXTURE_FIELDS = (
    "seq_len",
    "num_kv_pairs",
    "hops",
    "train_examples",
    "val_examples",
    "batch_size",
    "start_step",
)


@dataclass
class TaskSection:
    """A synthetic task from evals/ (train/tasks.py); loss only on answer tokens.

    `mixture` trains one model on several slices at once, e.g. Zoology/Based's MQAR mix
    [{seq_len: 64, num_kv_pairs: 4}, {seq_len: 256, num_kv_pairs: 16, batch_size: 16}]: batches
    alternate round-robin between the slices active at that step (each batch one slice, so no
    padding; `start_step` delays a slice, a curriculum), and validation reports every slice on its
    own (val/acc@64x4, …) besides the pooled val/acc. Each entry overrides the fields in
    MIXTURE_FIELDS; the fields above are the defaults.
    """

    name: str = "mqar"
    seq_len: int = 64
    num_kv_pairs: int = 4
    vocab_size: int = 8192
    hops: int = 1
    power_a: float = 0.01
    random_non_queries: bool = True
    separator: bool = False  # k-hop: each context pair written `0 k v` (evals/mqar.py)
    train_examples: int = 20_000
    val_examples: int = 512
    mixture: list[dict] = field(default_factory=list)

    def __post_init__(self) -> None:
        check_choice(self.name, tuple(sorted(TASKS.names())), "data.task.name")
        for name in ("train_examples", "val_examples"):
            check_positive(getattr(self, name), f"data.task.{name}")
        try:
            check_mqar_args(
                1, self.seq_len, self.num_kv_pairs, self.vocab_size, self.power_a, self.hops, self.separator
            )
        except ValueError as err:
            raise ValueError(str(err).replace("mqar.", "data.task.")) from None
        for i, entry in enumerate(self.mixture):
            where = f"data.task.mixture[{i}]"
            if not isinstance(entry, dict) or not set(entry) <= set(MIXTURE_FIELDS):
                raise ValueError(f"{where} = {entry!r}: a dict with keys among {', '.join(MIXTURE_FIELDS)}")
            if "batch_size" in entry:
                check_positive(entry["batch_size"], f"{where}.batch_size")
            if "start_step" in entry:
                check_positive(entry["start_step"], f"{where}.start_step", allow_zero=True)
            try:
                self.slice(entry)
            except ValueError as err:
                raise ValueError(f"{where}: {err}") from None
        if self.mixture:
            self.slices(1)  # slice names must be distinct

    def slice(self, entry: dict) -> TaskSection:
        fields = {k: v for k, v in entry.items() if k not in ("batch_size", "start_step")}
        return dataclasses.replace(self, **fields, mixture=[])

    def slices(self, batch_size: int) -> list[tuple[str, TaskSection, int, int]]:
        """-> [(name, task, batch size, start step)]: the mixture's slices, or this task alone."""
        out = []
        for entry in self.mixture or [{}]:
            task = self.slice(entry)
            name = f"{task.seq_len}x{task.num_kv_pairs}" + (f"h{task.hops}" if task.hops > 1 else "")
            out.append((name, task, entry.get("batch_size", batch_size), entry.get("start_step", 0)))
        if not any(start == 0 for *_, start in out):
            raise ValueError("data.task.mixture: at least one slice needs start_step 0 (the default)")
        if len({name for name, *_ in out}) != len(out):
            raise ValueError("data.task.mixture: two slices have the same seq_len, num_kv_pairs and hops")
        return out


@dataclass
class TextSection:
    """A text corpus through `datasets`, packed into rows of seq_len tokens."""

    files: list[str] = field(default_factory=list)  # local .txt/.jsonl/.json/.parquet; empty: stdlib source
    dataset: str | None = None  # a hub dataset name instead of files (needs network)
    split: str = "train"
    text_field: str = "text"
    tokenizer: str = "byte"  # byte | bpe | path of a Hugging Face tokenizer
    bpe_vocab_size: int = 4096
    seq_len: int = 256
    max_chars: int | None = None  # cap on corpus characters read (after a seeded document shuffle)
    val_fraction: float = 0.02

    def __post_init__(self) -> None:
        for name in ("bpe_vocab_size", "seq_len"):
            check_positive(getattr(self, name), f"data.text.{name}")
        if self.seq_len < 2:
            raise ValueError(
                f"data.text.seq_len = {self.seq_len}: must be >= 2 (one prediction needs two tokens)"
            )
        if self.max_chars is not None:
            check_positive(self.max_chars, "data.text.max_chars")
        check_fraction(self.val_fraction, "data.text.val_fraction", "[0, 1)")
        if self.tokenizer not in ("byte", "bpe") and not Path(self.tokenizer).is_dir():
            raise ValueError(
                f"data.text.tokenizer = {self.tokenizer!r}: allowed: byte, bpe, or a Hugging Face tokenizer folder"
            )
        if self.files and self.dataset:
            raise ValueError("data.text.files and data.text.dataset are both set; choose one source")


@dataclass
class DataSection:
    source: str = "task"  # task | text
    task: TaskSection = field(default_factory=TaskSection)
    text: TextSection = field(default_factory=TextSection)
    batch_size: int = 32

    def __post_init__(self) -> None:
        check_choice(self.source, DATA_SOURCES, "data.source")
        check_positive(self.batch_size, "data.batch_size")
