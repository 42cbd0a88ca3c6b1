"""Prefill FLOPs of a model over a span of tokens: the crossover benchmark's roofline and the
prefix cache's cost model (FLOPs a cached prefix saves) count them the same way."""

from __future__ import annotations

from ..quant import Int4Linear


def attended_keys(context: int, tokens: int, window: int | None) -> int:
    """Sum over the last `tokens` queries of a `context`-token sequence of the keys each sees."""
    lo, hi = context - tokens + 1, context  # each query sees its own position's count of keys
    if window is None or hi <= window:
        return (lo + hi) * tokens // 2
    if lo >= window:
        return window * tokens
    return (lo + window) * (window - lo + 1) // 2 + window * (hi - window)


def _leaf_mixers(mixer) -> list:
    """A layer's attention parts: the mixer itself, or each part of an `intra` layer."""
    parts = getattr(mixer, "parts", None)
    return [m for p in parts for m in _leaf_mixers(p)] if parts is not None else [mixer]


class PrefillCost:
    """FLOPs of the last `tokens` tokens of a `context`-token sequence: 2 per weight and token, q.k
    and p.v over the keys each layer reads (MLA absorbed: keys of R + Dr, values of R), and
    lightning's state read and update (4 per state element and token). The model is read once."""

    def __init__(self, model):
        weights = sum(p.numel() for n, p in model.named_parameters() if "embed_tokens" not in n)
        weights += sum(m.in_features * m.out_features for m in model.modules() if isinstance(m, Int4Linear))
        self.per_token = 2.0 * weights  # plus the recurrent layers' state work
        self.keyed: list[tuple[float, int | None]] = []  # (FLOPs per attended key, window)
        for mixer in model.mixers():
            for leaf in _leaf_mixers(mixer):
                spec = leaf.cache_spec()
                heads = getattr(leaf, "num_heads", None) or getattr(leaf.spec, "num_heads", 1)
                kind = type(spec).__name__
                if kind == "RecurrentSpec":
                    self.per_token += 4.0 * spec.num_heads * spec.key_dim * spec.value_dim
                elif kind == "KVSpec":
                    self.keyed.append((2.0 * heads * (spec.head_dim + spec.value_dim), spec.window))
                elif kind == "LatentSpec":
                    self.keyed.append((2.0 * heads * (2 * spec.latent_dim + spec.rope_dim), None))

    def __call__(self, context: int, tokens: int) -> float:
        total = self.per_token * tokens
        for per_key, window in self.keyed:
            total += per_key * attended_keys(context, tokens, window)
        return total

    def span(self, start: int, end: int) -> float:
        """FLOPs of computing tokens [start, end) of a sequence whose first `start` are cached."""
        return self(end, end - start) if end > start else 0.0


def step_flops(model, context: int, tokens: int) -> float:
    """FLOPs of the last `tokens` tokens of a `context`-token sequence (`PrefillCost`)."""
    return PrefillCost(model)(context, tokens)
