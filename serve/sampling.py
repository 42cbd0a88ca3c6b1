"""SamplingParams (per request) and the batched sampler: greedy, temperature, top-k, top-p, seeds,
min_tokens (end tokens masked until then)."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch


@dataclass(slots=True)
class SamplingParams:
    max_tokens: int = 16
    temperature: float = 0.0  # 0: greedy
    top_p: float = 1.0
    top_k: int = 0  # 0: all tokens
    seed: int | None = None
    stop: list[str] = field(default_factory=list)  # stop strings (not part of the output text)
    stop_token_ids: list[int] = field(default_factory=list)
    min_tokens: int = 0
    ignore_eos: bool = False
    logprobs: int | None = None  # top-n log-probabilities per output token (the chosen one always)

    def __post_init__(self):
        if isinstance(self.stop, str):
            self.stop = [self.stop]
        _int(self.max_tokens, "max_tokens", 1)
        _int(self.min_tokens, "min_tokens", 0)
        _int(self.top_k, "top_k", 0)
        if self.min_tokens > self.max_tokens:
            raise ValueError(f"min_tokens = {self.min_tokens} > max_tokens = {self.max_tokens}")
        if (
            not isinstance(self.temperature, (int, float))
            or isinstance(self.temperature, bool)
            or self.temperature < 0
        ):
            raise ValueError(f"temperature = {self.temperature!r}: must be a number >= 0 (0 is greedy)")
        if (
            not isinstance(self.top_p, (int, float))
            or isinstance(self.top_p, bool)
            or not 0 < self.top_p <= 1
        ):
            raise ValueError(f"top_p = {self.top_p!r}: must be in (0, 1]")
        if self.seed is not None:
            _int(self.seed, "seed", 0)
        if not all(isinstance(s, str) and s for s in self.stop):
            raise ValueError(f"stop = {self.stop!r}: must be a list of non-empty strings")
        if not all(isinstance(t, int) and t >= 0 for t in self.stop_token_ids):
            raise ValueError(f"stop_token_ids = {self.stop_token_ids!r}: must be non-negative token ids")
        if self.logprobs is not None:
            _int(self.logprobs, "logprobs", 0)

    @property
    def greedy(self) -> bool:
        return self.temperature == 0


def _int(value, name: str, low: int) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < low:
        raise ValueError(f"{name} = {value!r}: must be an integer >= {low}")


def sample(logits: torch.Tensor, params: list[SamplingParams], generators: list[torch.Generator | None]):
    """logits [N, V] fp32 (end tokens already masked) -> token ids [N] (a list).

    Greedy rows take one batched argmax; each sampled row draws with its request's generator, so a
    seeded request gives the same tokens whatever else is in the batch.
    """
    tokens = logits.argmax(-1).tolist()
    for i, p in enumerate(params):
        if not p.greedy:
            tokens[i] = int(torch.multinomial(probabilities(logits[i], p), 1, generator=generators[i]))
    return tokens


def probabilities(row: torch.Tensor, p: SamplingParams) -> torch.Tensor:
    """The distribution a sampled request draws from: logits [V] -> probabilities [V] after
    temperature, top-k and top-p (speculative decoding's rejection sampler uses it for both models)."""
    row = row / p.temperature
    if p.top_k and p.top_k < row.numel():
        kth = row.topk(p.top_k).values[-1]
        row = row.masked_fill(row < kth, float("-inf"))
    probs = torch.softmax(row, -1)
    if p.top_p < 1:
        sorted_p, order = probs.sort(descending=True)
        # Keep the smallest prefix whose mass reaches top_p (the token that crosses it included).
        drop = sorted_p.cumsum(-1) - sorted_p >= p.top_p
        probs = probs.scatter(0, order, sorted_p.masked_fill(drop, 0))
        probs = probs / probs.sum()
    return probs
