"""A request's life in the engine (tokens, progress, timings) and what the engine hands back."""

from __future__ import annotations

import enum
import time
from dataclasses import dataclass, field

import torch

from .sampling import SamplingParams


class Status(enum.Enum):
    WAITING = "waiting"
    RUNNING = "running"
    FINISHED = "finished"


@dataclass
class Metrics:
    arrival_time: float
    first_scheduled_time: float | None = None
    first_token_time: float | None = None
    finished_time: float | None = None
    token_times: list[float] = field(default_factory=list)  # one per output token

    @property
    def ttft(self) -> float | None:
        return None if self.first_token_time is None else self.first_token_time - self.arrival_time

    @property
    def time_between_tokens(self) -> list[float]:
        return [b - a for a, b in zip(self.token_times, self.token_times[1:], strict=False)]

    @property
    def e2e(self) -> float | None:
        return None if self.finished_time is None else self.finished_time - self.arrival_time


@dataclass
class Request:
    request_id: str
    prompt: str | None
    prompt_token_ids: list[int]
    params: SamplingParams
    eos_token_id: int | None
    metrics: Metrics
    output_token_ids: list[int] = field(default_factory=list)
    output_logprobs: list[dict[int, float]] = field(default_factory=list)
    status: Status = Status.WAITING
    num_computed: int = 0  # tokens whose cache entries exist (reset to 0 by preemption)
    num_cached_tokens: int = 0  # prompt tokens found in the prefix cache at (last) admission
    num_preemptions: int = 0
    finish_reason: str | None = None  # "stop", "length", "abort"
    stop_text_end: int | None = None  # where a matched stop string starts in the output text
    generator: torch.Generator | None = None
    draft_tokens: list[int] = field(default_factory=list)  # speculative: proposals being verified
    num_draft_tokens: int = 0  # speculative: drafts proposed over the request's life
    num_accepted_tokens: int = 0  # ... and accepted

    @property
    def all_token_ids(self) -> list[int]:
        return self.prompt_token_ids + self.output_token_ids

    @property
    def num_tokens(self) -> int:
        return len(self.prompt_token_ids) + len(self.output_token_ids)

    @property
    def end_token_ids(self) -> set[int]:
        ids = set(self.params.stop_token_ids)
        if self.eos_token_id is not None and not self.params.ignore_eos:
            ids.add(self.eos_token_id)
        return ids


@dataclass
class RequestOutput:
    request_id: str
    prompt: str | None
    prompt_token_ids: list[int]
    text: str | None
    token_ids: list[int]
    finished: bool
    finish_reason: str | None
    metrics: Metrics
    logprobs: list[dict[int, float]] | None = None
    num_preemptions: int = 0
    num_cached_tokens: int = 0  # tokens served from the prefix cache (not computed)
    num_draft_tokens: int = 0  # speculative decoding: tokens proposed ...
    num_accepted_tokens: int = 0  # ... and accepted by the target


def now() -> float:
    return time.perf_counter()
