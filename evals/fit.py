"""Fit a prompt to an exact token length, RULER-style: binary search on the number of haystack
units (words) for the longest prompt that fits, then close the remaining gap (less than one word)
with filler characters at the end of the haystack, checking the count with the real tokenizer each
time. Exactness matters twice: cells of one (task, length, hops) batch without padding, and a
length axis means what it says for every tokenizer.
"""

from __future__ import annotations

from collections.abc import Callable

from transformers import PreTrainedTokenizerBase

from .tokenizer import count_tokens

# Tried in order when closing the gap; each is harmless inside a noise or word haystack. Several
# are needed because a BPE may merge one of them into the previous token (adding no token).
FILLERS = (" .", ".", " ", "\n", ",", " -", " a", "0")
# How many haystack words to give back if the gap cannot be closed exactly from the best fit.
MAX_BACKOFF = 16


class PromptTooLong(ValueError):
    """The fixed part of a prompt (template + needles) alone exceeds the requested length."""


def fit_prompt(render: Callable[[int, str], str], tokenizer: PreTrainedTokenizerBase, length: int) -> str:
    """`render(n, pad)` builds the prompt with `n` haystack words and `pad` appended to the haystack;
    returns the prompt of exactly `length` tokens."""
    return render(*fit_units(render, tokenizer, length))


def fit_units(
    render: Callable[[int, str], str], tokenizer: PreTrainedTokenizerBase, length: int
) -> tuple[int, str]:
    """The (n, pad) for which `render(n, pad)` is exactly `length` tokens, with n as large as
    possible. Token count must be (roughly) non-decreasing in `n`; the search only relies on it to
    find a large fitting `n`, never for correctness.
    """

    def count(n: int, pad: str = "") -> int:
        return count_tokens(tokenizer, render(n, pad))

    base = count(0)
    if base > length:
        raise PromptTooLong(f"the prompt without haystack is {base} tokens, more than length={length}")
    lo, hi = 0, 1  # invariant: count(lo) <= length; count(hi) > length once bracketed
    while count(hi) <= length:
        lo, hi = hi, hi * 2
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (mid, hi) if count(mid) <= length else (lo, mid)

    for n in range(lo, max(lo - MAX_BACKOFF, 0) - 1, -1):
        pad = close_gap(lambda p, n=n: count(n, p), length)
        if pad is not None:
            return n, pad
    raise RuntimeError(f"could not pad the prompt to exactly {length} tokens with fillers {FILLERS}")


def close_gap(count: Callable[[str], int], length: int) -> str | None:
    """Greedily append fillers that each add at least one token without overshooting."""
    pad, current = "", count("")
    while current < length:
        for filler in FILLERS:
            after = count(pad + filler)
            if current < after <= length:
                pad, current = pad + filler, after
                break
        else:
            return None
    return pad if current == length else None
