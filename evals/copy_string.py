"""Copy (Jelassi et al. 2024, "Repeat After Me"): repeat a string of uniformly random words.

The whole context is the string, so it cannot be compressed: a fixed-size state must fail once the
string exceeds its capacity, while attention can copy any length it was trained to. The answer is
as long as the context, so generation costs as many tokens as the prompt.
"""

from __future__ import annotations

import random

from transformers import PreTrainedTokenizerBase

from .fit import fit_units
from .haystack import random_word_stream
from .sample import TextSample
from .text_tasks import register_task

HEADER = "Repeat the text exactly."


@register_task("copy", max_hops=1)
def copy_string(
    tokenizer: PreTrainedTokenizerBase, length: int, hops: int, rng: random.Random, index: int
) -> TextSample:
    stream = random_word_stream(rng)

    def render(n: int, pad: str) -> str:
        # the pad goes after the header so that the string to copy is exactly the random words
        return f"{HEADER}{pad}\n{' '.join(stream.take(n))}\nAnswer:"

    n, pad = fit_units(render, tokenizer, length)
    prompt, text = render(n, pad), " ".join(stream.take(n))
    if not text:
        raise ValueError(f"copy: length={length} leaves no room for a string to copy")
    return TextSample(
        task="copy",
        prompt=prompt,
        answers=(text,),
        metric="string_match_all",
        length=length,
        hops=hops,
        meta={"words": len(text.split())},
    )
