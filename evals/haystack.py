"""Haystacks: endless, seeded word streams (noise sentences, key-value distractor needles, random
words) and `weave`, which places needles at relative depths on sentence boundaries."""

from __future__ import annotations

import bisect
import itertools
import random
from collections.abc import Callable, Iterator, Sequence

from .words import ADJECTIVES, NOISE, NOUNS


class WordStream:
    """An endless word sequence drawn from a seeded source; `take(n)` is the same prefix however
    often and in whatever order it is called, so the length search can grow and shrink `n`."""

    def __init__(self, words: Iterator[str]):
        self._source = words
        self._words: list[str] = []

    def take(self, n: int) -> list[str]:
        if n > len(self._words):
            self._words.extend(itertools.islice(self._source, n - len(self._words)))
        return self._words[:n]


def noise_stream() -> WordStream:
    """RULER's repeated noise sentences (carry no information)."""
    return WordStream(itertools.cycle(NOISE.split()))


def sentence_stream(make_sentence: Callable[[], str]) -> WordStream:
    """Endless sentences from `make_sentence` (e.g. key-value distractor needles), as words."""

    def words():
        while True:
            yield from make_sentence().split()

    return WordStream(words())


def random_word_stream(rng: random.Random, vocabulary: Sequence[str] = NOUNS + ADJECTIVES) -> WordStream:
    """Uniform random words: incompressible text for copy and n-gram lookup."""
    return WordStream(rng.choice(vocabulary) for _ in itertools.count())


def weave(words: list[str], needles: Sequence[tuple[float, str]]) -> str:
    """Join `words` with spaces and insert each (depth in [0, 1], sentence) at the sentence
    boundary nearest to that depth. Needles at the same boundary keep their given order, so a
    chain of statements listed in order stays in order."""
    # boundary i = "before word i"; sentences end in '.', and both ends are boundaries
    bounds = [0] + [i + 1 for i, w in enumerate(words) if w.endswith(".")]
    if bounds[-1] != len(words):
        bounds.append(len(words))
    slots: dict[int, list[str]] = {}
    for depth, sentence in needles:
        assert 0.0 <= depth <= 1.0, depth
        target = depth * len(words)
        j = bisect.bisect_left(bounds, target)
        candidates = bounds[max(j - 1, 0) : j + 1]
        at = min(candidates, key=lambda b: abs(b - target))
        slots.setdefault(at, []).append(sentence)
    pieces: list[str] = []
    for i in range(len(words) + 1):
        pieces.extend(slots.get(i, ()))
        if i < len(words):
            pieces.append(words[i])
    return " ".join(pieces)


def depth_grid(points: int) -> list[float]:
    """`points` depths evenly spaced over [0, 100] percent (RULER uses 40)."""
    if points == 1:
        return [50.0]
    return [round(100 * i / (points - 1), 2) for i in range(points)]
