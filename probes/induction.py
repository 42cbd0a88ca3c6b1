"""Induction heads (TransformerLens `head_detector.py`): attention from a token to the position
right after its earlier copy — the duplicate pattern shifted right by one."""

from __future__ import annotations

from .pattern_probe import PatternProbe
from .patterns import induction_pattern
from .probe_registry import register_probe


@register_probe
class InductionProbe(PatternProbe):
    name = "induction"
    summary = "attends to the token after an earlier copy of the current token (TransformerLens 'mul' score)"

    def pattern(self, tokens):
        return induction_pattern(tokens)
