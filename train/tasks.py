"""Synthetic tasks for training: name -> generator of (input_ids [N, T], labels [N, T]).

Generators live in evals/ (shared with the eval suite); a new task is one function there plus one
line here. Labels are aligned with input_ids (-100 off the answers), so loss is only on answers.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from ..common import Registry
from ..evals import mqar_examples


def mqar_task(task, num_examples: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    # hops > 1 is k-hop MQAR (chains A -> B -> C).
    return mqar_examples(
        num_examples,
        task.seq_len,
        task.num_kv_pairs,
        task.vocab_size,
        seed,
        power_a=task.power_a,
        hops=task.hops,
        random_non_queries=task.random_non_queries,
        separator=task.separator,
    )


# name -> generator (the project's one registration idiom, attnlab.common.Registry)
TASKS: Registry[Callable] = Registry("training task")
TASKS.register("mqar", mqar_task)
