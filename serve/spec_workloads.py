"""The speculative-decoding benchmark's workloads (serve/spec_bench.py), as byte-token prompts:

- **code**: chunks of Python standard-library files the models never trained on (the trainer keeps
  a seeded shuffle of the files up to `data.text.max_chars`; the files after the cut are held out),
  each starting at a line; the model continues the code.
- **copy**: the eval suite's copy task (evals/copy_string.py): "Repeat the text exactly." and a
  string of random words, then "Answer:" — the answer is already in the prompt, which is what
  n-gram lookup (prompt lookup) feeds on.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path

WORKLOADS = ("code", "copy")


@dataclass
class Workload:
    name: str
    prompts: list[list[int]]  # token ids, each exactly the prompt length
    answers: list[str] | None = None  # copy: the string the model is asked to repeat
    sources: list[str] | None = None  # code: the file each prompt was cut from


def held_out_files(files: list[str], seed: int, max_chars: int | None) -> list[str]:
    """The files a text-corpus training run (train/corpus.py: non-empty files as documents, a
    `random.Random(seed)` shuffle, documents kept up to `max_chars`, the last one cut) never saw."""
    docs = []
    for f in files:
        size = len(Path(f).read_text(encoding="utf-8"))
        if size:
            docs.append((f, size))
    if max_chars is None:
        return []
    random.Random(seed).shuffle(docs)  # the same permutation as the trainer's: it depends on len only
    total = 0
    for i, (_, size) in enumerate(docs):
        total += size
        if total >= max_chars:
            return sorted(f for f, _ in docs[i + 1 :])
    return []


def code_workload(tokenizer, files: list[str], n: int, length: int, room: int, seed: int) -> Workload:
    """n prompts of `length` tokens, one per file, each starting at a line with at least `room`
    tokens of the file after it (so the continuation is real code)."""
    rng = random.Random(seed)
    (newline,) = tokenizer("\n", add_special_tokens=False)["input_ids"]
    order = list(files)
    rng.shuffle(order)
    prompts, sources = [], []
    for f in order:
        ids = tokenizer(Path(f).read_text(encoding="utf-8"), add_special_tokens=False)["input_ids"]
        last = len(ids) - length - room  # the latest start with room after the prompt
        if last < 0:
            continue
        starts = [0] + [i + 1 for i, t in enumerate(ids[:last]) if t == newline]
        start = rng.choice(starts)
        prompts.append(ids[start : start + length])
        sources.append(f)
        if len(prompts) == n:
            return Workload("code", prompts, sources=sources)
    raise ValueError(
        f"the held-out files hold {len(prompts)} chunks of {length} + {room} tokens, fewer than the {n} "
        "prompts asked for: lower --prompt-len or --new-tokens"
    )


def copy_workload(tokenizer, n: int, length: int, seed: int) -> Workload:
    """n prompts of the eval suite's copy task, each exactly `length` tokens."""
    from ..evals import make_sample

    samples = [make_sample("copy", tokenizer, length, seed=seed, index=i) for i in range(n)]
    prompts = [tokenizer(s.prompt, add_special_tokens=False)["input_ids"] for s in samples]
    return Workload("copy", prompts, answers=[s.answers[0] for s in samples])


def copied_fraction(tokenizer, answer: str, tokens: list[int]) -> float:
    """How much of the output repeats the answer before its first mistake, as a fraction of what
    the output could have repeated (a leading space or newline is allowed)."""
    text = tokenizer.decode(tokens, skip_special_tokens=True)
    text = text[1:] if text[:1] in (" ", "\n") else text
    room = min(len(answer), len(text))
    if not room:
        return 0.0
    same = next((i for i, (a, b) in enumerate(zip(answer, text, strict=False)) if a != b), room)
    return same / room


def repeated_fraction(prompt: list[int], output: list[int], n: int = 4) -> float:
    """The share of output tokens that complete an n-gram already seen earlier in the prompt or
    output: how loopy greedy decoding is, which is what prompt lookup feeds on."""
    tokens = prompt + output
    seen = {tuple(tokens[i : i + n]) for i in range(len(prompt) - n + 1)}
    hits = 0
    for i in range(len(prompt), len(tokens)):
        gram = tuple(tokens[i - n + 1 : i + 1])
        hits += gram in seen
        seen.add(gram)
    return hits / len(output) if output else 0.0
