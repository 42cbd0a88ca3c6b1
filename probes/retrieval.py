"""Retrieval heads (Wu et al. 2024, "Retrieval Head Mechanistically Explains Long-Context
Factuality", arXiv 2404.15574; code nightdessert/Retrieval_Head).

For each NIAH prompt (probes/niah_tokens.py) the model decodes greedily, one query per step. At each
step, for each head, take the argmax of the step's attention row; if that position lies inside the
needle's answer span and holds the token just generated, the head copied it: add 1 / |span|. A
sample counts only if the generation's ROUGE-1 recall against the answer is > 50 %; a head's score is
its mean over counted samples. Heads above 0.1 are retrieval heads.

Known weak spots of the reference script, handled here:
- no hard-coded head counts (heads per layer come from the model);
- no patched modeling files (attnlab mixers / transformers' AttentionInterface);
- ties: the reference takes `topk(1)`, which returns one of the tied positions, typically the
  first, i.e. the attention sink at position 0. Here every position within float rounding of the
  maximum is a candidate; a tied sink (position 0) is dropped when a real position ties with it; a
  head with several candidates left scores the fraction of them that are copies (the expectation of
  a random tie-break), so a uniform head scores ~|span| / S, not 1.
Lightning heads are scored on their implied map, whose argmax is the largest positive weight (a
large negative weight, i.e. anti-attention, is invisible to it).
"""

from __future__ import annotations

import torch
from tqdm.auto import tqdm

from .decode import Decoded, greedy_decode
from .niah_tokens import NeedleSample, needle_grid, rouge1_recall
from .probe import Probe, ProbeResult, ProbeSettings
from .probe_registry import register_probe
from .target import ProbeTarget

DEFAULT_MAX_CONTEXT = 512  # CPU-sized default cap on NIAH prompt + answer tokens
ROUGE_GATE = 0.5


def copy_hits(row: torch.Tensor, span: tuple[int, int], prompt: torch.Tensor, token: int) -> torch.Tensor:
    """row [H, S] attention of one decode query -> [H] in [0, 1]: the share of each head's argmax
    candidates that sit in the span and hold `token` (1 when the unique argmax is such a copy)."""
    top = row.max(-1, keepdim=True).values  # [H, 1]
    tol = 4 * torch.finfo(row.dtype).eps * top.abs()
    candidates = row >= top - tol  # [H, S]
    real = candidates.clone()
    real[:, 0] = False  # the sink: only a candidate when nothing else ties with it
    candidates = torch.where(real.any(-1, keepdim=True), real, candidates)
    copies = torch.zeros(row.shape[-1], dtype=torch.bool)
    start, end = span
    copies[start:end] = prompt[start:end] == token
    return (candidates & copies).sum(-1) / candidates.sum(-1)


def sample_scores(decoded: Decoded, sample: NeedleSample, heads_per_layer: list[int]) -> torch.Tensor:
    """-> [L, Hmax]: Σ over decode steps of copy hits / |span| for one sample."""
    out = torch.zeros(len(heads_per_layer), max(heads_per_layer))
    span_len = sample.span[1] - sample.span[0]
    for token, rows in zip(decoded.tokens, decoded.rows, strict=True):
        for l, row in enumerate(rows):  # row [H_l, S]
            out[l, : row.shape[0]] += copy_hits(row, sample.span, sample.prompt, token) / span_len
    return out


@register_probe
class RetrievalProbe(Probe):
    name = "retrieval"
    threshold = 0.1
    summary = "copies needle tokens by argmax attention while decoding NIAH answers (Wu et al. 2024)"
    task = "exact-match accuracy on token-level NIAH, heads masked during decoding"

    def max_len(self, target: ProbeTarget, settings: ProbeSettings) -> int:
        """Longest prompt: the context cap minus room for the answer."""
        cap = settings.max_context or min(target.max_context or DEFAULT_MAX_CONTEXT, DEFAULT_MAX_CONTEXT)
        if target.max_context is not None:
            cap = min(cap, target.max_context)
        return cap - settings.value_len

    def samples(self, target: ProbeTarget, settings: ProbeSettings, seed: int) -> list[NeedleSample]:
        return needle_grid(
            target.token_pool(),
            self.max_len(target, settings),
            settings.niah_lengths,
            settings.niah_depths,
            settings.niah_needles,
            settings.key_len,
            settings.value_len,
            seed,
            target.bos_id,
        )

    def score(self, target: ProbeTarget, settings: ProbeSettings) -> ProbeResult:
        samples = self.samples(target, settings, settings.seed)
        hpl = target.heads_per_layer
        total = torch.zeros(len(hpl), max(hpl))
        counted, recalls = 0, []
        for sample in tqdm(samples, desc=self.name, disable=not settings.progress, leave=False):
            decoded = greedy_decode(target, sample.prompt, len(sample.answer), maps=True)
            recall = rouge1_recall(decoded.tokens, sample.answer.tolist())
            recalls.append(recall)
            if recall > ROUGE_GATE:
                counted += 1
                total += sample_scores(decoded, sample, hpl)
        mean = total / max(counted, 1)  # no counted sample: every head 0 (reported in details)
        return ProbeResult(
            self.name,
            [mean[l, :n].tolist() for l, n in enumerate(hpl)],
            self.threshold,
            {
                "samples": len(samples),
                "samples_counted": counted,
                "mean_rouge1_recall": round(sum(recalls) / len(recalls), 4),
                "lengths": sorted({s.length for s in samples}),
                "depths": sorted({s.depth for s in samples}),
                "needles_per_cell": settings.niah_needles,
                **self.details(samples, settings),
            },
        )

    def details(self, samples: list[NeedleSample], settings: ProbeSettings) -> dict:
        """What the prompts were made of, for the report."""
        return {"key_len": settings.key_len, "value_len": settings.value_len}

    def accuracy(
        self, target: ProbeTarget, settings: ProbeSettings, heads=(), mode: str = "uniform"
    ) -> float:
        # A fresh grid (seed + 1), so accuracy is not measured on the prompts the heads were found on.
        samples = self.samples(target, settings, settings.seed + 1)
        right = 0
        for sample in samples:
            decoded = greedy_decode(target, sample.prompt, len(sample.answer), heads=heads, mode=mode)
            right += decoded.tokens == sample.answer.tolist()
        return right / len(samples)
