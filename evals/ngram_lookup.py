"""N-gram lookup (Jelassi et al. 2024, "Repeat After Me"): given an n-gram that occurs once in a
string of uniformly random words, say the words that follow it. Solving it needs an induction-style
lookup over the whole context; the n-gram's position walks a depth grid with the sample index.
"""

from __future__ import annotations

import random

from transformers import PreTrainedTokenizerBase

from .fit import fit_units
from .haystack import depth_grid, random_word_stream
from .sample import TextSample
from .text_tasks import register_task

HEADER = "Read the text."
QUESTION = 'Question: Which {k} words follow "{ngram}"?\nAnswer:'


def occurrences(words: list[str], ngram: list[str]) -> int:
    g = len(ngram)
    return sum(words[i : i + g] == ngram for i in range(len(words) - g + 1))


@register_task("ngram_lookup", max_hops=1)
def ngram_lookup(
    tokenizer: PreTrainedTokenizerBase,
    length: int,
    hops: int,
    rng: random.Random,
    index: int,
    ngram: int = 3,
    answer_words: int = 2,
    depths: int = 11,
) -> TextSample:
    grid = depth_grid(depths)
    depth = grid[index % len(grid)] / 100
    span = ngram + answer_words
    for _attempt in range(20):
        stream = random_word_stream(rng)

        def where(n: int) -> int:
            return round(depth * (n - span))

        def render(n: int, pad: str, stream=stream, where=where) -> str:
            words = stream.take(max(n, span))
            at = where(max(n, span))
            question = QUESTION.format(k=answer_words, ngram=" ".join(words[at : at + ngram]))
            return f"{HEADER}{pad}\n{' '.join(stream.take(n))}\n{question}"

        n, pad = fit_units(render, tokenizer, length)
        prompt, words = render(n, pad), stream.take(n)
        if len(words) < span:
            raise ValueError(f"ngram_lookup: length={length} leaves room for {len(words)} words, need {span}")
        at = where(len(words))
        # a repeated n-gram would make the answer ambiguous: draw a fresh string (rare)
        if occurrences(words, words[at : at + ngram]) == 1:
            break
    else:
        raise RuntimeError("ngram_lookup: no unique n-gram in 20 draws; use a larger ngram")
    return TextSample(
        task="ngram_lookup",
        prompt=prompt,
        answers=(" ".join(words[at + ngram : at + span]),),
        metric="string_match_all",
        length=length,
        hops=hops,
        meta={"depth": grid[index % len(grid)], "ngram": ngram, "words": len(words)},
    )
