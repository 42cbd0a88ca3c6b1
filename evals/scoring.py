"""Scoring as published. Text tasks: RULER's `string_match_all` (mean fraction of references found
in the prediction, case-insensitive) and `string_match_part` (1 if any reference is found), applied
after RULER's `postprocess_pred`. Token tasks (MQAR): exact match of each answer token under
teacher forcing, Zoology's accuracy. Scores here are fractions in [0, 1]; RULER reports x100.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import torch

IGNORE_INDEX = -100
_CONTROL = re.compile(r"[\x00-\x1f]")


def postprocess(prediction: str) -> str:
    """RULER `postprocess_pred`: strip, and turn control characters into newlines."""
    return _CONTROL.sub("\n", prediction.strip()).strip()


def string_match_all(prediction: str, references: Sequence[str]) -> float:
    text = prediction.lower()
    return sum(ref.lower() in text for ref in references) / len(references)


def string_match_part(prediction: str, references: Sequence[str]) -> float:
    text = prediction.lower()
    return float(any(ref.lower() in text for ref in references))


METRICS = {"string_match_all": string_match_all, "string_match_part": string_match_part}


def score_text(prediction: str, references: Sequence[str], metric: str) -> float:
    if metric not in METRICS:
        raise ValueError(f"unknown metric {metric!r}; allowed: {', '.join(METRICS)}")
    return METRICS[metric](postprocess(prediction), references)


def answer_token_hits(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Per answer token, whether the greedy next-token prediction is right.

    logits [N, T, V], labels [N, T] aligned with the inputs (HF convention: labels[t] is predicted
    at t - 1; -100 elsewhere) -> bool [A], A = number of answer tokens, in row-major order.
    """
    predicted = logits[:, :-1].argmax(-1)  # [N, T-1]: the guess for position t+1
    target = labels[:, 1:]  # [N, T-1]
    mask = target != IGNORE_INDEX
    return predicted[mask] == target[mask]
