"""Rank an op's backends at one shape and store the ranking, for code that wants `default: ranked`
without touching the user's ranking cache (e.g. `attnlab bench train-step`)."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

import torch

from . import dispatch, harness, report
from .workloads import suite_workloads


@contextlib.contextmanager
def ranking_cache(path: Path):
    """Point the ranking cache at `path` for the block (the user's ~/.cache is never read or written)."""
    previous = os.environ.get("ATTNLAB_KERNEL_CACHE")
    os.environ["ATTNLAB_KERNEL_CACHE"] = str(path)
    dispatch.forget()
    try:
        yield path
    finally:
        if previous is None:
            os.environ.pop("ATTNLAB_KERNEL_CACHE", None)
        else:
            os.environ["ATTNLAB_KERNEL_CACHE"] = previous
        dispatch.forget()


def rank_op(op: str, workload: dict, device: torch.device, reps: int, seed: int = 0) -> dict[str, list[str]]:
    """Check and time `op`'s backends on one workload entry (configs/kernels.yaml's fields), forward
    and forward+backward, and store the ranking in the current cache -> {mode: ranking}."""
    config = {"models": {}, "suites": {"one-shape": {op: [workload]}}}
    traces = harness.run(suite_workloads(config, "one-shape"), device, None, reps, seed)
    ranks = report.rankings(traces).get(op, {})
    for mode, names in ranks.items():
        if names:
            dispatch.write_ranking(device.type, op, mode, names, {"suite": "one-shape"})
    return ranks
