"""The suite as lm-eval tasks: YAMLs in `lm_eval_yaml/` (the `--include_path`) point their
`custom_dataset` here, the way lm-eval's RULER tasks generate their data. lm-eval calls it with
the task's metadata merged with `--model_args` and `--metadata`, so the samples are length-exact
for the evaluated model's own tokenizer (from `pretrained=PATH`, or `tokenizer=PATH`).

Metadata keys: lengths (alias max_seq_lengths, RULER's name), hops, samples, seed, and options
({task: {option: value}}, e.g. {"variable_tracking": {"chains": 2}}).
`python -m attnlab.evals.lm_eval_data` prints the include path.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import datasets

from .fit import PromptTooLong
from .scoring import score_text
from .suite import SuiteSpec
from .text_tasks import make_sample

log = logging.getLogger(__name__)

DEFAULTS = SuiteSpec()
# Per-length and per-hops metrics named in the YAMLs (lm-eval needs metric names up front); every
# sample also counts in `score`, so lengths outside this list are still reported there.
REPORTED_LENGTHS = (256, 512, 1024, 2048, 4096)
REPORTED_HOPS = (1, 2, 4)
NOT_THIS_CELL = -1  # RULER's convention: an aggregate skips samples of other lengths


def include_path() -> Path:
    return Path(__file__).with_name("lm_eval_yaml")


def tokenizer_for(pretrained: str | None = None, tokenizer: str | None = None, **_):
    from transformers import AutoTokenizer

    from .loading import resolve_model_dir
    from .tokenizer import load_tokenizer

    source = tokenizer or pretrained
    if not source:
        raise ValueError(
            "attnlab tasks need a tokenizer to size prompts: pass --model_args pretrained=PATH (or tokenizer=PATH)"
        )
    if Path(source).exists():
        return load_tokenizer(resolve_model_dir(source), source)
    return AutoTokenizer.from_pretrained(source)  # a hub name: works offline only if cached


def build_dataset(
    task: str,
    lengths=None,
    max_seq_lengths=None,
    hops=None,
    samples: int = DEFAULTS.samples,
    seed: int = DEFAULTS.seed,
    options: dict | None = None,
    **metadata,
) -> dict[str, datasets.Dataset]:
    tok = tokenizer_for(**metadata)
    spec = SuiteSpec(
        suite="text",
        tasks=(task,),
        lengths=tuple(lengths or max_seq_lengths or DEFAULTS.lengths),
        hops=tuple(hops or DEFAULTS.hops),
        samples=int(samples),
        seed=int(seed),
        options={task: options[task]} if options and task in options else {},
    )
    if not spec.cells():
        raise ValueError(
            f"attnlab task {task} is single-hop; hops {list(spec.hops)} leave it no cells (include 1)"
        )
    rows = []
    for name, length, n_hops in spec.cells():
        try:
            cell = [
                make_sample(name, tok, length, n_hops, spec.seed, i, **spec.options.get(name, {}))
                for i in range(spec.samples)
            ]
        except PromptTooLong as err:
            log.warning("attnlab: skipping cell: %s", err)
            continue
        for i, s in enumerate(cell):
            row = s.to_json()
            rows.append({**row, "target": s.target, "index": i, "meta": json.dumps(row["meta"])})
    if not rows:
        fits = shortest_length(task, tok, max(spec.lengths), min(spec.hops), spec)
        raise ValueError(
            f"attnlab task {task}: every length in {list(spec.lengths)} is too short for its prompt; "
            + (f"the shortest that fits is {fits} tokens (e.g. --metadata '{{\"lengths\": [{fits}]}}')"
               if fits else "no length up to 1M tokens fits")
        )  # fmt: skip
    return {"test": datasets.Dataset.from_list(rows)}


def shortest_length(task: str, tok, too_short: int, hops: int, spec: SuiteSpec) -> int | None:
    """The shortest context length at which `task`'s first sample fits (None past 1M tokens)."""

    def fits(length: int) -> bool:
        try:
            make_sample(task, tok, length, hops, spec.seed, 0, **spec.options.get(task, {}))
        except PromptTooLong:
            return False
        return True

    lo, hi = too_short, too_short * 2
    while not fits(hi):
        lo, hi = hi, hi * 2
        if hi > 1 << 20:
            return None
    while hi - lo > 1:  # lo does not fit, hi does
        mid = (lo + hi) // 2
        lo, hi = (lo, mid) if fits(mid) else (mid, hi)
    return hi


def process_results(doc: dict, results: list[str]) -> dict[str, float]:
    score = score_text(results[0], doc["answers"], doc["metric"])
    out = {"score": score}
    # Only the doc's own cell: a length or hop count no doc has gets no value at all, so lm-eval's
    # table lists only what was asked (a -1 placeholder for every other cell used to show up there).
    if doc["length"] in REPORTED_LENGTHS:
        out[f"len_{doc['length']}"] = score
    if doc["hops"] in REPORTED_HOPS:
        out[f"hops_{doc['hops']}"] = score
    return out


def aggregate(items: list[float]) -> float:
    kept = [x for x in items if x != NOT_THIS_CELL]
    return sum(kept) / len(kept) if kept else NOT_THIS_CELL


if __name__ == "__main__":
    print(include_path())
