"""Prefix matching (Olsson et al. 2022, "In-context learning and induction heads"): on 25 random
tokens repeated 4 times, the attention a head pays to the token after an earlier occurrence of the
current token, averaged over the positions that have one (every repeat after the first)."""

from __future__ import annotations

from .pattern_probe import PatternProbe
from .patterns import induction_pattern, prefix_matching_score
from .probe_registry import register_probe


@register_probe
class PrefixMatchingProbe(PatternProbe):
    name = "prefix_matching"
    summary = "attention mass on the tokens after earlier copies of the current token (Olsson et al.)"

    def shape(self, settings):
        return settings.prefix_len, settings.prefix_repeats

    def pattern(self, tokens):
        return induction_pattern(tokens)

    def aggregate(self, maps, pattern):
        return prefix_matching_score(maps, pattern)
