"""RULER needle-in-a-haystack variants (NVIDIA/RULER `niah`; lm-eval `niah_*`).

Needle: "One of the special magic {kind} for {key} is: {value}." (RULER's template). Variants:
  single      one needle; the question asks for its key
  multikey    one needle plus `distractors` needles with other keys (RULER multikey)
  multivalue  `values` needles share the queried key; the answer is all of them
  multiquery  `queries` needles with different keys; the question asks for all of them
Haystack: "noise" (RULER's repeated sentences) or "kv" (endless distractor needles with fresh
keys, RULER's needle haystack). The queried needle's depth walks a grid of `depths` points over
0-100 % with the sample index, so a cell covers the grid evenly.
"""

from __future__ import annotations

import random
import uuid

from transformers import PreTrainedTokenizerBase

from .fit import fit_prompt
from .haystack import depth_grid, noise_stream, sentence_stream, weave
from .sample import TextSample
from .text_tasks import register_task
from .words import ADJECTIVES, NOUNS

NEEDLE = "One of the special magic {kinds} for {key} is: {value}."
HEADER = "Memorize the special magic {kinds} hidden in the text."
QUESTION = "Question: What are all the special magic {kinds} for {keys}?\nAnswer:"
KINDS = ("numbers", "words", "uuids")
VARIANTS = ("single", "multikey", "multivalue", "multiquery")
HAYSTACKS = ("noise", "kv")


def draw(rng: random.Random, kind: str) -> str:
    if kind == "numbers":
        return str(rng.randrange(1_000_000, 10_000_000))  # 7 digits
    if kind == "words":
        return f"{rng.choice(ADJECTIVES)}-{rng.choice(NOUNS)}"
    assert kind == "uuids", kind
    return str(uuid.UUID(int=rng.getrandbits(128), version=4))


def draw_unique(rng: random.Random, kind: str, taken: set[str]) -> str:
    for _ in range(10_000):
        if (value := draw(rng, kind)) not in taken:
            taken.add(value)
            return value
    raise ValueError(
        f"ran out of distinct {kind} for this haystack; use key_kind='uuids' for very long contexts"
    )


def niah(
    tokenizer: PreTrainedTokenizerBase,
    length: int,
    hops: int,
    rng: random.Random,
    index: int,
    variant: str = "single",
    haystack: str | None = None,
    key_kind: str = "words",
    value_kind: str = "numbers",
    distractors: int = 3,
    values: int = 4,
    queries: int = 4,
    depths: int = 11,
) -> TextSample:
    if variant not in VARIANTS:
        raise ValueError(f"niah variant {variant!r}; allowed: {', '.join(VARIANTS)}")
    haystack = haystack or ("kv" if variant == "multikey" else "noise")
    if haystack not in HAYSTACKS:
        raise ValueError(f"niah haystack {haystack!r}; allowed: {', '.join(HAYSTACKS)}")
    for option, kind in (("key_kind", key_kind), ("value_kind", value_kind)):
        if kind not in KINDS:
            raise ValueError(f"niah {option} {kind!r}; allowed: {', '.join(KINDS)}")
    kinds = value_kind
    keys_taken: set[str] = set()
    values_taken: set[str] = set()
    n_keys = {"single": 1, "multikey": 1 + distractors, "multivalue": 1, "multiquery": queries}[variant]
    n_values = values if variant == "multivalue" else 1
    keys = [draw_unique(rng, key_kind, keys_taken) for _ in range(n_keys)]
    pairs = [(k, draw_unique(rng, value_kind, values_taken)) for k in keys for _ in range(n_values)]
    queried = keys if variant == "multiquery" else keys[:1]

    grid = depth_grid(depths)
    depth = grid[index % len(grid)] / 100  # the (first) queried needle
    needles = [(depth, NEEDLE.format(kinds=kinds, key=k, value=v)) for k, v in pairs[:1]]
    needles += [(rng.random(), NEEDLE.format(kinds=kinds, key=k, value=v)) for k, v in pairs[1:]]
    needles.sort(key=lambda n: n[0])

    if haystack == "noise":
        stream = noise_stream()
    else:

        def distractor() -> str:
            return NEEDLE.format(
                kinds=kinds,
                key=draw_unique(rng, key_kind, keys_taken),
                value=draw_unique(rng, value_kind, values_taken),
            )

        stream = sentence_stream(distractor)
    header = HEADER.format(kinds=kinds)
    question = QUESTION.format(kinds=kinds, keys=", ".join(queried))

    def render(n: int, pad: str) -> str:
        return f"{header}\n{weave(stream.take(n), needles)}{pad}\n{question}"

    return TextSample(
        task=f"niah_{variant}",
        prompt=fit_prompt(render, tokenizer, length),
        answers=tuple(v for k, v in pairs if k in queried),
        metric="string_match_all",
        length=length,
        hops=hops,
        meta={"variant": variant, "haystack": haystack, "depth": grid[index % len(grid)], "keys": len(keys)},
    )


for _variant in VARIANTS:
    register_task(f"niah_{_variant}", max_hops=1, variant=_variant)(niah)
