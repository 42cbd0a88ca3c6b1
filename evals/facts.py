"""bAbI-style supporting facts (Weston et al. 2015, tasks 1-3) in a noise haystack, any hops.

hops = number of facts needed to answer:
  1  "Mary went to the kitchen."                                  Where is Mary?      -> kitchen
  2  + "Mary picked up the key."                                  Where is the key?   -> kitchen
  k  + "The key is in the box." "The box is in the bag." ...      Where is the key?   -> kitchen
     (k - 2 containment facts, then the person holds the outermost container)
Every entity gets exactly one fact, so order does not matter and the answer is unique. The facts of
the queried chain and of `distractors` chains of the same shape (disjoint entities) are shuffled
and scattered over the haystack, so no chain is contiguous.
"""

from __future__ import annotations

import itertools
import random

from transformers import PreTrainedTokenizerBase

from .fit import fit_prompt
from .haystack import noise_stream, weave
from .sample import TextSample
from .text_tasks import register_task
from .words import CONTAINERS, OBJECTS, PEOPLE, PLACES

HEADER = "Read the story."


def chain_facts(person: str, place: str, things: list[str]) -> list[str]:
    """things[0] is inside things[1] ... inside things[-1], which the person picked up."""
    facts = [f"{person.capitalize()} went to the {place}."]
    if things:
        facts.append(f"{person.capitalize()} picked up the {things[-1]}.")
    facts += [f"The {inner} is in the {outer}." for inner, outer in itertools.pairwise(things)]
    return facts


@register_task("facts", max_hops=None)
def facts(
    tokenizer: PreTrainedTokenizerBase,
    length: int,
    hops: int,
    rng: random.Random,
    index: int,
    distractors: int = 3,
) -> TextSample:
    chains = distractors + 1
    containers_needed = chains * max(hops - 2, 0)
    if chains > len(PEOPLE) or chains > len(OBJECTS) or containers_needed > len(CONTAINERS):
        raise ValueError(
            f"facts: hops={hops} with distractors={distractors} needs {containers_needed} containers "
            f"(have {len(CONTAINERS)}) and {chains} people/objects; lower hops or distractors"
        )
    people = rng.sample(PEOPLE, chains)
    objects = rng.sample(OBJECTS, chains)
    containers = rng.sample(CONTAINERS, containers_needed)
    statements: list[str] = []
    for c in range(chains):
        things = [] if hops == 1 else [objects[c]] + containers[c * (hops - 2) : (c + 1) * (hops - 2)]
        statements += chain_facts(people[c], place := rng.choice(PLACES), things)
        if c == 0:
            answer = place
            subject = people[0].capitalize() if hops == 1 else f"the {objects[0]}"
    rng.shuffle(statements)
    needles = sorted(zip([rng.random() for _ in statements], statements, strict=True))
    question = f"Question: Where is {subject}?\nAnswer:"
    noise = noise_stream()

    def render(n: int, pad: str) -> str:
        return f"{HEADER}\n{weave(noise.take(n), needles)}{pad}\n{question}"

    return TextSample(
        task="facts",
        prompt=fit_prompt(render, tokenizer, length),
        answers=(answer,),
        metric="string_match_all",
        length=length,
        hops=hops,
        meta={"distractors": distractors},
    )
