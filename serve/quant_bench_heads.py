"""Do a model's top heads survive quantization? Per probe, the unquantized model's top-k heads
(by score; only heads scoring at least `min_score`, and above 0, count as found: a head that copies
1 % of the time is noise, not a retrieval head) against a quantized model's: the share of them
still in its top k, and Spearman's rank correlation of all head scores.

Scores are [layer][head] lists as probes/ returns them (NaN or None where a head has no score).
"""

from __future__ import annotations

import math


def _flat(scores: list[list[float | None]]) -> dict[tuple[int, int], float]:
    """(layer, head) -> score for every head that has one."""
    return {
        (layer, head): float(s)
        for layer, row in enumerate(scores)
        for head, s in enumerate(row)
        if s is not None and not math.isnan(s)
    }


def top_heads(scores: list[list[float | None]], k: int, min_score: float = 0.0) -> list[tuple[int, int]]:
    """The k best heads scoring above 0 and at least `min_score`, best first (ties: lower layer,
    then lower head, first)."""
    ranked = sorted(((-s, head) for head, s in _flat(scores).items() if s > 0 and s >= min_score))
    return [head for _, head in ranked[:k]]


def top_overlap(
    base: list[list[float | None]], other: list[list[float | None]], k: int, min_score: float = 0.0
) -> float | None:
    """|top_k(base, scoring >= min_score) ∩ top_k(other)| / |the former|, in [0, 1]; None when no
    base head scores above 0 and at least min_score (nothing to survive)."""
    kept = top_heads(base, k, min_score)
    if not kept:
        return None
    return len(set(kept) & set(top_heads(other, k))) / len(kept)


def ranks(values: list[float]) -> list[float]:
    """1-based ranks, ties sharing the mean of their positions."""
    order = sorted(range(len(values)), key=lambda i: values[i])
    out = [0.0] * len(values)
    i = 0
    while i < len(order):
        j = i
        while j + 1 < len(order) and values[order[j + 1]] == values[order[i]]:
            j += 1
        for position in range(i, j + 1):
            out[order[position]] = (i + j) / 2 + 1
        i = j + 1
    return out


def spearman(base: list[list[float | None]], other: list[list[float | None]]) -> float | None:
    """Spearman's rho over the heads both score (Pearson of tie-averaged ranks); None with fewer
    than two such heads or when either side is constant (no order to compare)."""
    a, b = _flat(base), _flat(other)
    heads = sorted(set(a) & set(b))
    if len(heads) < 2:
        return None
    x, y = ranks([a[h] for h in heads]), ranks([b[h] for h in heads])
    mx, my = sum(x) / len(x), sum(y) / len(y)
    sxy = sum((p - mx) * (q - my) for p, q in zip(x, y, strict=True))
    sxx, syy = sum((p - mx) ** 2 for p in x), sum((q - my) ** 2 for q in y)
    if sxx == 0 or syy == 0:
        return None
    return sxy / math.sqrt(sxx * syy)


def survival(
    base: list[list[float | None]], other: list[list[float | None]], k: int, min_score: float = 0.0
) -> dict:
    """What the report shows for one probe and one quantized variant."""
    return {
        "top_k": k,
        "min_score": min_score,
        "base_top": [list(h) for h in top_heads(base, k, min_score)],
        "top": [list(h) for h in top_heads(other, k)],
        "overlap": top_overlap(base, other, k, min_score),
        "spearman": spearman(base, other),
    }
