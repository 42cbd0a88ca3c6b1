"""Detection patterns and the scores that compare attention maps with them.

Patterns follow TransformerLens `transformer_lens/head_detector.py`, batched; each is a
bool [B, T, T] that is True where query i "should" attend to key j:
- previous token: j = i - 1;
- duplicate token: j < i and token j == token i;
- induction: j >= 1 and token j-1 == token i, with j - 1 < i (the duplicate pattern shifted right by
  one). Olsson et al.'s prefix matching attends to the same keys.

Scores, per head, from maps [B, H, T, T]:
- `tl_mul_score`: TransformerLens "mul", Σ(A ⊙ P) / ΣA over the whole map, averaged over the batch.
  On two repeats a perfect induction head scores only ≈ 0.5 with it: the first repeat has nothing to
  attend to, yet its rows count in ΣA.
- `mul_score`: the same ratio over the query rows that have a target (P's non-empty rows), so a
  perfect head scores 1 whatever the share of such rows. This is the score probes report and
  threshold; `tl_mul_score` is kept alongside it for comparison with TransformerLens numbers.
- `prefix_matching_score`: Olsson et al., the attention mass on the targets averaged over rows with a
  target (no division by ΣA; equal to `mul_score` when rows sum to 1).
Lightning heads' implied maps are signed and unnormalised: their ratios are computed on the raw map
and can leave [0, 1].
"""

from __future__ import annotations

import torch


def previous_token_pattern(tokens: torch.Tensor) -> torch.Tensor:
    """tokens [B, T] -> [B, T, T] bool, True at (i, i-1)."""
    b, t = tokens.shape
    eye = torch.eye(t, dtype=torch.bool, device=tokens.device)
    shifted = torch.zeros_like(eye)
    shifted[1:, :-1] = eye[1:, 1:]
    return shifted.expand(b, t, t)


def duplicate_token_pattern(tokens: torch.Tensor) -> torch.Tensor:
    """tokens [B, T] -> [B, T, T] bool, True at (i, j) for j < i holding the same token."""
    same = tokens[:, :, None] == tokens[:, None, :]  # [B, T, T]
    return torch.tril(same, diagonal=-1)


def induction_pattern(tokens: torch.Tensor) -> torch.Tensor:
    """tokens [B, T] -> [B, T, T] bool, True at (i, j) where token j-1 == token i and j-1 < i."""
    dup = duplicate_token_pattern(tokens)
    out = torch.zeros_like(dup)
    out[:, :, 1:] = dup[:, :, :-1]
    # j - 1 < i allows j = i (the current position follows an earlier copy of itself); TL keeps it too.
    return torch.tril(out)


def _ratio(num: torch.Tensor, den: torch.Tensor) -> torch.Tensor:
    return torch.where(den != 0, num / torch.where(den != 0, den, 1.0), torch.nan)


def mul_score(maps: torch.Tensor, pattern: torch.Tensor) -> torch.Tensor:
    """maps [B, H, T, T], pattern [B, T, T] -> [H]: Σ(A ⊙ P) / ΣA over rows with a target, batch mean."""
    maps = maps.float()
    rows = pattern.any(-1)[:, None, :]  # [B, 1, T]
    num = (maps * pattern[:, None]).sum(-1)  # [B, H, T]
    den = maps.sum(-1)  # [B, H, T]
    per_seq = _ratio((num * rows).sum(-1), (den * rows).sum(-1))  # [B, H]
    return per_seq.nanmean(0)


def tl_mul_score(maps: torch.Tensor, pattern: torch.Tensor) -> torch.Tensor:
    """maps [B, H, T, T], pattern [B, T, T] -> [H]: TransformerLens' Σ(A ⊙ P) / ΣA, batch mean."""
    maps = maps.float()
    per_seq = _ratio((maps * pattern[:, None]).sum((-1, -2)), maps.sum((-1, -2)))  # [B, H]
    return per_seq.nanmean(0)


def prefix_matching_score(maps: torch.Tensor, pattern: torch.Tensor) -> torch.Tensor:
    """maps [B, H, T, T], pattern [B, T, T] -> [H]: mean over rows with a target of Σ_j A_ij P_ij."""
    maps = maps.float()
    rows = pattern.any(-1)[:, None, :].expand(-1, maps.shape[1], -1)  # [B, H, T]
    mass = (maps * pattern[:, None]).sum(-1)  # [B, H, T]
    return (mass * rows).sum((0, 2)) / rows.sum((0, 2)).clamp(min=1)
