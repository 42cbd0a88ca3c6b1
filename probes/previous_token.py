"""Previous-token heads (TransformerLens `head_detector.py`): attention from i to i - 1."""

from __future__ import annotations

from .pattern_probe import PatternProbe
from .patterns import previous_token_pattern
from .probe_registry import register_probe


@register_probe
class PreviousTokenProbe(PatternProbe):
    name = "previous_token"
    summary = "attends to the previous position (TransformerLens 'mul' score, rows with a target)"

    def pattern(self, tokens):
        return previous_token_pattern(tokens)
