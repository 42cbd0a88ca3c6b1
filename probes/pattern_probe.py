"""Shared body of the probes scored on repeated random sequences against a detection pattern
(previous-token, duplicate-token, induction: TransformerLens; prefix matching: Olsson et al.).

Each sequence runs through the model on its own (a progress step), its maps are compared with the
pattern, and per-sequence scores are averaged, as TransformerLens averages over a list of inputs.
The ablation task of all of them is in-context copying: next-token accuracy on the repeats after
the first, the behaviour these heads implement together.
"""

from __future__ import annotations

import torch
from tqdm.auto import tqdm

from .patterns import mul_score, tl_mul_score
from .probe import Probe, ProbeResult, ProbeSettings
from .sequences import copy_accuracy, repeated_random_tokens
from .target import ProbeTarget


class PatternProbe(Probe):
    threshold = 0.5
    task = "next-token accuracy on the repeated half of repeated random sequences"

    def pattern(self, tokens: torch.Tensor) -> torch.Tensor:
        """tokens [B, T] -> bool [B, T, T]."""
        raise NotImplementedError

    def shape(self, settings: ProbeSettings) -> tuple[int, int]:
        """(tokens per repeat, repeats)."""
        return settings.seq_len, settings.repeats

    def aggregate(self, maps: torch.Tensor, pattern: torch.Tensor) -> torch.Tensor:
        """maps [B, H, T, T], pattern [B, T, T] -> [H]."""
        return mul_score(maps, pattern)

    def tokens(self, target: ProbeTarget, settings: ProbeSettings, seed: int) -> torch.Tensor:
        length, repeats = self.shape(settings)
        return repeated_random_tokens(
            target.token_pool(), settings.batch, length, repeats, seed, target.bos_id
        )

    def score(self, target: ProbeTarget, settings: ProbeSettings) -> ProbeResult:
        tokens = self.tokens(target, settings, settings.seed)  # [B, T]
        if target.max_context is not None and tokens.shape[1] > target.max_context:
            raise ValueError(
                f"{self.name}: probe sequences of {tokens.shape[1]} tokens exceed the model context "
                f"({target.max_context}); lower seq_len / prefix_len"
            )
        scores = torch.zeros(len(tokens), target.num_layers, max(target.heads_per_layer))  # [B, L, Hmax]
        tl = torch.zeros_like(scores)
        for b in tqdm(range(len(tokens)), desc=self.name, disable=not settings.progress, leave=False):
            row = tokens[b : b + 1]
            pattern = self.pattern(row)  # [1, T, T]
            for l, m in enumerate(target.run(row, maps=True).maps):  # m [1, H_l, T, T]
                scores[b, l, : m.shape[1]] = self.aggregate(m.cpu(), pattern)
                tl[b, l, : m.shape[1]] = tl_mul_score(m.cpu(), pattern)
        mean, tl_mean = scores.nanmean(0), tl.nanmean(0)  # [L, Hmax]
        hpl = target.heads_per_layer
        length, repeats = self.shape(settings)
        return ProbeResult(
            self.name,
            [mean[l, :n].tolist() for l, n in enumerate(hpl)],
            self.threshold,
            {
                "sequences": len(tokens),
                "tokens_per_repeat": length,
                "repeats": repeats,
                "bos": target.bos_id,
                "transformerlens_mul": [
                    [round(v, 6) for v in tl_mean[l, :n].tolist()] for l, n in enumerate(hpl)
                ],
            },
        )

    def accuracy(
        self, target: ProbeTarget, settings: ProbeSettings, heads=(), mode: str = "uniform"
    ) -> float:
        # A fresh draw (seed + 1): the task is scored on sequences the heads were not found on.
        tokens = self.tokens(target, settings, settings.seed + 1)
        first_copy = self.shape(settings)[0] + (target.bos_id is not None)
        with target.flags(heads, mode):
            logits = target.run(tokens).logits
        return copy_accuracy(logits, tokens, first_copy)
