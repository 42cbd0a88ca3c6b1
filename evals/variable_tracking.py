"""RULER variable tracking (NVIDIA/RULER `variable_tracking`; lm-eval `ruler_vt`).

A chain starts with `VAR X0 = 12345.` and continues `VAR Xj = VAR Xj-1.` for `hops` steps; the
statements sit in order at random depths of a noise haystack, alongside `chains - 1` distractor
chains with other values. The question names the first chain's value; the answer is every variable
of that chain. Names are 5 random uppercase letters (RULER). With `icl=True` a worked example with
re-randomised names and value comes first, as RULER requires for zero-shot models.
"""

from __future__ import annotations

import itertools
import random
import string

from transformers import PreTrainedTokenizerBase

from .fit import fit_prompt
from .haystack import noise_stream, weave
from .sample import TextSample
from .text_tasks import register_task

HEADER = "Track the variable assignments in the text."
QUESTION = "Question: Which variables are assigned the value {value}?\nAnswer:"


def chain_statements(names: list[str], value: int) -> list[str]:
    return [f"VAR {names[0]} = {value}."] + [f"VAR {b} = VAR {a}." for a, b in itertools.pairwise(names)]


def draw_names(rng: random.Random, count: int, taken: set[str]) -> list[str]:
    names: list[str] = []
    while len(names) < count:
        name = "".join(rng.choices(string.ascii_uppercase, k=5))
        if name not in taken:
            taken.add(name)
            names.append(name)
    return names


def draw_values(rng: random.Random, count: int) -> list[int]:
    return rng.sample(range(10000, 100000), count)  # distinct 5-digit values


def icl_example(rng: random.Random, hops: int, taken: set[str]) -> str:
    names = draw_names(rng, hops + 1, taken)
    (value,) = draw_values(rng, 1)
    context = weave(
        noise_stream().take(24),
        [(0.25 + 0.5 * i / (hops + 1), s) for i, s in enumerate(chain_statements(names, value))],
    )
    return f"{HEADER}\n{context}\n{QUESTION.format(value=value)} {', '.join(names)}\n\n"


@register_task("variable_tracking", max_hops=None)
def variable_tracking(
    tokenizer: PreTrainedTokenizerBase,
    length: int,
    hops: int,
    rng: random.Random,
    index: int,
    chains: int = 1,
    icl: bool = False,
) -> TextSample:
    taken: set[str] = set()
    all_names = [draw_names(rng, hops + 1, taken) for _ in range(chains)]
    values = draw_values(rng, chains)
    needles: list[tuple[float, str]] = []
    for names, value in zip(all_names, values, strict=True):
        depths = sorted(rng.random() for _ in range(hops + 1))  # in order: each statement reads the previous
        needles += zip(depths, chain_statements(names, value), strict=True)
    needles.sort(key=lambda n: n[0])
    example = icl_example(rng, hops, taken) if icl else ""
    question = QUESTION.format(value=values[0])
    noise = noise_stream()

    def render(n: int, pad: str) -> str:
        return f"{example}{HEADER}\n{weave(noise.take(n), needles)}{pad}\n{question}"

    return TextSample(
        task="variable_tracking",
        prompt=fit_prompt(render, tokenizer, length),
        answers=tuple(all_names[0]),
        metric="string_match_all",
        length=length,
        hops=hops,
        meta={"chains": chains, "value": values[0], "icl": icl},
    )
