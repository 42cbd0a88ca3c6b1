"""Brute-force solvers for the eval suite's text tasks: they read only the prompt text (the public
format of each task, nothing from the generators) and return the answer. Shared by the generator
and runner tests."""

from __future__ import annotations

import re


def solve_variable_tracking(prompt: str) -> list[str]:
    main = prompt.rsplit("Track the variable assignments", 1)[1]  # skip an in-context example
    assign = dict(re.findall(r"VAR ([A-Z]{5}) = (\d+|VAR [A-Z]{5})\.", main))
    value = re.search(r"assigned the value (\d+)\?", main)[1]

    def resolve(name: str) -> str:
        rhs = assign[name]
        return rhs if rhs.isdigit() else resolve(rhs.removeprefix("VAR "))

    return sorted(name for name in assign if resolve(name) == value)


def solve_niah(prompt: str) -> list[str]:
    needles = re.findall(
        r"One of the special magic \w+ for (\S+) is: ([\w-]+)\.", prompt
    )  # values: digits, words, uuids
    keys = re.search(r"special magic \w+ for (.+)\?\nAnswer:$", prompt)[1].split(", ")
    return sorted(value for key, value in needles if key in keys)


def solve_facts(prompt: str) -> tuple[list[str], int]:
    """-> ([place], number of facts used)."""
    went = dict(re.findall(r"([A-Z][a-z]+) went to the (\w+)\.", prompt))
    held_by = {thing: person for person, thing in re.findall(r"([A-Z][a-z]+) picked up the (\w+)\.", prompt)}
    inside = dict(re.findall(r"The (\w+) is in the (\w+)\.", prompt))
    subject = re.search(r"Where is (?:the )?(\w+)\?", prompt)[1]
    facts, x = 0, subject
    while x not in went:
        x = held_by[x] if x in held_by else inside[x]
        facts += 1
    return [went[x]], facts + 1


def solve_copy(prompt: str) -> list[str]:
    return [prompt.removesuffix("\nAnswer:").rsplit("\n", 1)[1]]


def solve_ngram_lookup(prompt: str) -> list[str]:
    body, question = prompt.rsplit("\nQuestion: ", 1)
    words = body.rsplit("\n", 1)[1].split()
    k, ngram = re.search(r'Which (\d+) words follow "(.+)"\?', question).groups()
    ngram = ngram.split()
    hits = [i for i in range(len(words)) if words[i : i + len(ngram)] == ngram]
    assert len(hits) == 1, f"n-gram occurs {len(hits)} times"
    start = hits[0] + len(ngram)
    return [" ".join(words[start : start + int(k)])]


def solve(task: str, prompt: str) -> list[str]:
    if task == "facts":
        return solve_facts(prompt)[0]
    if task.startswith("niah_"):
        return solve_niah(prompt)
    return {
        "variable_tracking": solve_variable_tracking,
        "copy": solve_copy,
        "ngram_lookup": solve_ngram_lookup,
    }[task](prompt)
