"""Duplicate-token heads (TransformerLens `head_detector.py`): attention from a token to its earlier
copies."""

from __future__ import annotations

from .pattern_probe import PatternProbe
from .patterns import duplicate_token_pattern
from .probe_registry import register_probe


@register_probe
class DuplicateTokenProbe(PatternProbe):
    name = "duplicate"
    summary = (
        "attends to earlier copies of the current token (TransformerLens 'mul' score, rows with a target)"
    )

    def pattern(self, tokens):
        return duplicate_token_pattern(tokens)
