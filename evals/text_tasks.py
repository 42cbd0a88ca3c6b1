"""The text tasks: a task is one generator file with `@register_task(name, ...)`, plus one line in
TEXT_TASKS' module list (the project's one registration idiom, attnlab.common.Registry)."""

from __future__ import annotations

import random
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field, replace

from transformers import PreTrainedTokenizerBase

from ..common import Registry
from .fit import PromptTooLong
from .sample import TextSample

# builder(tokenizer, length, hops, rng, index, **options) -> TextSample
Builder = Callable[..., TextSample]


@dataclass(frozen=True)
class TextTask:
    name: str
    build: Builder
    max_hops: int | None  # None: any number of hops; 1: single-hop task
    fixed: dict = field(default_factory=dict)  # options this registration pins (e.g. a variant)

    def supports(self, hops: int) -> bool:
        return hops >= 1 and (self.max_hops is None or hops <= self.max_hops)


TEXT_TASKS: Registry[TextTask] = Registry(
    "text task",
    modules=[
        f"attnlab.evals.{generator}"
        for generator in ("copy_string", "facts", "ngram_lookup", "niah", "variable_tracking")
    ],
)


def register_task(name: str, max_hops: int | None = 1, **fixed) -> Callable[[Builder], Builder]:
    def decorator(build: Builder) -> Builder:
        TEXT_TASKS.register(name, TextTask(name, build, max_hops, fixed))
        return build

    return decorator


def text_tasks() -> dict[str, TextTask]:
    """Every registered text task, by name."""
    return dict(TEXT_TASKS.items())


def sample_seed(seed: int, task: str, length: int, hops: int, index: int) -> int:
    # A stable hash (not Python's salted hash()) so a cell's samples are the same in every process.
    return zlib.crc32(f"{seed}/{task}/{length}/{hops}/{index}".encode())


def make_sample(
    task: str,
    tokenizer: PreTrainedTokenizerBase,
    length: int,
    hops: int = 1,
    seed: int = 0,
    index: int = 0,
    **options,
) -> TextSample:
    """Sample `index` of cell (task, length, hops) for `seed`: the same inputs give the same sample."""
    if task not in TEXT_TASKS:
        raise ValueError(f"unknown text task {task!r}; allowed: {', '.join(sorted(TEXT_TASKS))}")
    spec = TEXT_TASKS.get(task)
    if not spec.supports(hops):
        raise ValueError(f"task {task!r} supports hops 1..{spec.max_hops}, got hops={hops}")
    rng = random.Random(sample_seed(seed, task, length, hops, index))
    try:
        sample = spec.build(tokenizer, length, hops, rng, index, **{**options, **spec.fixed})
    except PromptTooLong as err:
        raise PromptTooLong(f"{task} (length={length}, hops={hops}): {err}") from None
    return replace(sample, task=task)
