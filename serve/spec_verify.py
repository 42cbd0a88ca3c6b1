"""Speculative decoding's acceptance rule: which of k proposed tokens the target model keeps, and
the token it adds after them.

The target scores the request's last token and the k drafts in one forward, giving k + 1 rows of
logits: row i is the target's distribution for the token after draft i (row 0: after the last
accepted token). Then (Leviathan et al. 2023; Chen et al. 2023):

- **greedy**: accept drafts while each equals the argmax of its row; the first row that disagrees
  (or row k, if all were accepted) gives one more token, its argmax. The output is token for token
  what plain greedy decoding gives.
- **sampled**: accept draft x_i with probability min(1, p_i(x_i) / q_i(x_i)), where p_i is the
  target's distribution and q_i the proposer's (temperature, top-k and top-p applied to both); at
  the first rejection draw from normalize(max(0, p_i - q_i)) and stop; if all k are accepted draw a
  bonus token from p_k. Every emitted token is distributed exactly as the target's own sampling
  would be. An n-gram proposal is deterministic: q_i puts all its mass on x_i.
"""

from __future__ import annotations

import torch

from .sampling import SamplingParams, probabilities


def accept_greedy(logits: torch.Tensor, drafts: list[int]) -> list[int]:
    """logits [k + 1, V] -> the accepted drafts followed by the target's own next token."""
    best = logits.argmax(-1).tolist()
    out = []
    for i, d in enumerate(drafts):
        if d != best[i]:
            break
        out.append(d)
    out.append(best[len(out)])
    return out


def accept_sampled(
    target: torch.Tensor,
    drafts: list[int],
    proposal: torch.Tensor | None,
    generator: torch.Generator | None,
) -> list[int]:
    """target: probabilities [k + 1, V]; proposal: the drafts' probabilities [k, V], or None for
    a deterministic proposer -> accepted drafts + one token drawn by the rule above."""
    out = []
    for i, d in enumerate(drafts):
        p = target[i]
        q_d = 1.0 if proposal is None else float(proposal[i, d])
        if float(torch.rand((), generator=generator)) * q_d < float(p[d]):  # u < p/q, without dividing
            out.append(d)
            continue
        if proposal is None:
            residual = p.clone()
            residual[d] = 0.0  # max(0, p - onehot(d))
        else:
            residual = (p - proposal[i]).clamp_min(0.0)
        total = float(residual.sum())
        residual = p if total <= 0 else residual / total  # p == q exactly: nothing to correct
        out.append(int(torch.multinomial(residual, 1, generator=generator)))
        return out
    out.append(int(torch.multinomial(target[len(drafts)], 1, generator=generator)))
    return out


def target_probabilities(logits: torch.Tensor, params: SamplingParams) -> torch.Tensor:
    """logits [n, V] -> the target's sampling distributions [n, V]."""
    return torch.stack([probabilities(row, params) for row in logits])
