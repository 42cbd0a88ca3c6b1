"""Text corpora through `datasets`, packed into fixed-length rows.

Sources: local .txt / .jsonl / .json / .parquet files (one `datasets` packaged builder per format), a
hub dataset name when the machine is online, or - the default, needing no download - the Python
standard library's own .py sources on this machine (~12 MB of real code with long-range structure:
imports used far below, names defined and referenced across a file).
"""

from __future__ import annotations

import random
import sysconfig
from pathlib import Path

import numpy as np
import torch

BUILDERS = {
    ".txt": "text",
    ".md": "text",
    ".py": "text",
    ".jsonl": "json",
    ".json": "json",
    ".parquet": "parquet",
}
# Test suites are a third of the stdlib and mostly boilerplate; site-packages is not the stdlib.
STDLIB_SKIP = {"site-packages", "dist-packages", "test", "tests", "idle_test", "__pycache__"}


def stdlib_sources() -> list[str]:
    root = Path(sysconfig.get_paths()["stdlib"])
    files = [p for p in root.rglob("*.py") if not STDLIB_SKIP & set(p.relative_to(root).parts)]
    if not files:
        raise FileNotFoundError(f"no Python standard library sources under {root}; set data.text.files")
    return sorted(str(p) for p in files)


def builder_for(files: list[str]) -> str:
    kinds = set()
    for f in files:
        suffix = Path(f).suffix.lower()
        if suffix not in BUILDERS:
            raise ValueError(
                f"data.text.files: {f!r} has suffix {suffix!r}; allowed: {', '.join(sorted(BUILDERS))}"
            )
        if not Path(f).exists():
            raise ValueError(f"data.text.files: {f!r} does not exist")
        kinds.add(BUILDERS[suffix])
    if len(kinds) > 1:
        raise ValueError(f"data.text.files mixes formats {sorted(kinds)}; give files of one format")
    return kinds.pop()


def load_documents(text) -> list[str]:
    """TextSection -> documents (one per file for plain text, one per row for json/parquet)."""
    import datasets

    if text.dataset:
        try:
            ds = datasets.load_dataset(text.dataset, split=text.split)
        except Exception as err:  # noqa: BLE001 - network, auth, missing split: one clear message
            raise ValueError(
                f"data.text.dataset = {text.dataset!r} (split {text.split!r}) could not be loaded: {err}; "
                f"an offline machine needs local data.text.files"
            ) from None
    else:
        files = list(text.files) or stdlib_sources()
        builder = builder_for(files)
        # Whole files as documents: packing then keeps each file's long-range structure intact.
        kwargs = {"sample_by": "document"} if builder == "text" else {}
        ds = datasets.load_dataset(builder, data_files=files, split="train", **kwargs)
    if text.text_field not in ds.column_names:
        raise ValueError(
            f"data.text.text_field = {text.text_field!r} is not a column of the corpus; columns: "
            f"{', '.join(ds.column_names)}"
        )
    return [t for t in ds[text.text_field] if t]


def sample_documents(docs: list[str], seed: int, max_chars: int | None) -> list[str]:
    """Seeded shuffle, then keep documents up to max_chars (the last one cut)."""
    docs = list(docs)
    random.Random(seed).shuffle(docs)
    if max_chars is None:
        return docs
    kept, total = [], 0
    for d in docs:
        kept.append(d[: max_chars - total])
        total += len(kept[-1])
        if total >= max_chars:
            break
    return kept


def pack(token_arrays: list[np.ndarray], seq_len: int, eos_id: int | None) -> torch.Tensor:
    """Concatenate documents (EOS between them when the tokenizer has one) -> rows [M, seq_len];
    the tail shorter than a row is dropped."""
    parts = []
    for ids in token_arrays:
        parts.append(ids.astype(np.int64))
        if eos_id is not None:
            parts.append(np.array([eos_id], dtype=np.int64))
    stream = np.concatenate(parts) if parts else np.zeros(0, dtype=np.int64)
    rows = len(stream) // seq_len
    return torch.from_numpy(stream[: rows * seq_len].reshape(rows, seq_len).copy())


def split_rows(rows: torch.Tensor, val_fraction: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Last rows (at least one) for validation; the documents were shuffled before packing."""
    if len(rows) < 2:
        raise ValueError(
            f"the corpus packs into {len(rows)} row(s) of data.text.seq_len tokens; need at least 2 "
            f"(one train, one validation): add text, raise data.text.max_chars, or lower seq_len"
        )
    n_val = min(len(rows) - 1, max(1, round(len(rows) * val_fraction)))
    return rows[:-n_val], rows[-n_val:]
