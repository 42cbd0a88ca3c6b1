"""The suite runner: generate every cell's samples, run the model, score, and (for `attnlab eval`)
write eval.json, eval.md, predictions.jsonl and plots into a run directory.

`evaluate_suite` is the training hook: the trainer calls it as a validation step and logs the
returned flat dict of metrics.
"""

from __future__ import annotations

import dataclasses
import json
import time
from dataclasses import dataclass, field
from pathlib import Path

from tqdm.auto import tqdm
from transformers import PreTrainedTokenizerBase

from ..kernels import backends_used, kernel_record
from .fit import PromptTooLong
from .generation import encode, greedy_generate
from .loading import load_model, model_names, training_mqar_options
from .scoring import score_text
from .suite import TOKEN_TASKS, SuiteSpec
from .text_tasks import make_sample
from .tokenizer import byte_tokenizer

# Generation budget beyond the longest reference answer in a batch: room for a model's formatting
# (RULER sizes its budget per task the same way) without letting it ramble into extra credit.
ANSWER_SLACK = 8


@dataclass
class SuiteResult:
    cells: list[dict] = field(default_factory=list)  # one per (task, length, hops)
    predictions: list[dict] = field(default_factory=list)  # one per text sample

    def metrics(self, prefix: str = "eval/") -> dict[str, float]:
        """Flat metrics for loggers: '{prefix}{task}/len{L}/hops{h}' and '{prefix}mean'."""
        scored = [c for c in self.cells if c["score"] is not None]
        out = {f"{prefix}{c['task']}/len{c['length']}/hops{c['hops']}": c["score"] for c in scored}
        if scored:
            out[f"{prefix}mean"] = sum(c["score"] for c in scored) / len(scored)
        return out


def run_suite(
    model, tokenizer: PreTrainedTokenizerBase | None, spec: SuiteSpec, progress: bool = True
) -> SuiteResult:
    """Every cell of `spec` on `model` (eval mode, no grad). `tokenizer` may be None for a vocab-256
    model (byte-level) or a suite of token tasks only."""
    if tokenizer is None and model.config.vocab_size == 256:
        tokenizer = byte_tokenizer()
    cells = spec.cells()
    result = SuiteResult()
    bar = tqdm(total=len(cells) * spec.samples, desc="eval", unit="sample", disable=not progress)
    was_training = model.training
    model.eval()
    try:
        for task, length, hops in cells:
            bar.set_postfix_str(f"{task} len={length} hops={hops}")
            options = spec.options.get(task, {})
            if task in TOKEN_TASKS:
                cell = run_token_cell(model, task, length, hops, spec, options, result.predictions)
            elif tokenizer is None:
                cell = skipped(task, length, hops, "no tokenizer for a text task")
            else:
                cell = run_text_cell(
                    model, tokenizer, task, length, hops, spec, options, result.predictions, bar
                )
            result.cells.append(cell)
            bar.n = len(result.cells) * spec.samples
            bar.refresh()
    finally:
        model.train(was_training)
        bar.close()
    return result


def evaluate_suite(
    model, tokenizer: PreTrainedTokenizerBase | None, suite_spec: SuiteSpec | dict
) -> dict[str, float]:
    """Training hook: the suite as a validation step -> {'eval/{task}/len{L}/hops{h}': score, 'eval/mean': ...}."""
    spec = suite_spec if isinstance(suite_spec, SuiteSpec) else SuiteSpec.from_dict(suite_spec)
    return run_suite(model, tokenizer, spec, progress=False).metrics()


def skipped(task: str, length: int, hops: int, reason: str) -> dict:
    return {"task": task, "length": length, "hops": hops, "score": None, "n": 0, "skipped": reason}


def run_token_cell(
    model, task: str, length: int, hops: int, spec: SuiteSpec, options: dict, predictions: list | None = None
) -> dict:
    from .token_tasks import chain_accuracy, mqar_cell

    assert task == "mqar", task
    try:
        ids, labels, meta = mqar_cell(
            model.config.vocab_size, length, hops, spec.samples, spec.seed, **options
        )
    except ValueError as err:  # the vocabulary or length cannot hold this cell
        return skipped(task, length, hops, str(err))
    rows: list[dict] = []
    accuracy = chain_accuracy(model, ids, labels, hops, spec.batch_size, rows)
    if predictions is not None:
        for row in rows:
            right = row["chains_right"] == row["chains"]
            predictions.append({"task": task, "length": length, "hops": hops, **row, "score": float(right)})
    return {
        "task": task,
        "length": length,
        "hops": hops,
        "score": accuracy["chain"],
        "n": spec.samples,
        "metric": "chain_exact_match",
        "answer_token_accuracy": accuracy["token"],
        "sample_exact_match": accuracy["sample"],
        **meta,
    }


def run_text_cell(model, tokenizer, task, length, hops, spec, options, predictions: list, bar) -> dict:
    try:
        samples = [
            make_sample(task, tokenizer, length, hops, spec.seed, i, **options) for i in range(spec.samples)
        ]
    except PromptTooLong as err:
        return skipped(task, length, hops, str(err))
    budget = max(len(encode(tokenizer, s.target)) for s in samples) + ANSWER_SLACK
    outputs = greedy_generate(
        model,
        tokenizer,
        [s.prompt for s in samples],
        budget,
        spec.batch_size,
        on_batch=lambda n: bar.update(n),
    )
    scores = [score_text(out, s.answers, s.metric) for s, out in zip(samples, outputs, strict=True)]
    for i, (s, out, score) in enumerate(zip(samples, outputs, scores, strict=True)):
        predictions.append(
            {
                "task": task,
                "length": length,
                "hops": hops,
                "index": i,
                "answers": list(s.answers),
                "prediction": out,
                "score": score,
                "meta": s.meta,
            }
        )
    return {
        "task": task,
        "length": length,
        "hops": hops,
        "score": sum(scores) / len(scores),
        "n": len(scores),
        "metric": samples[0].metric,
    }


def run_eval(
    paths: list[str | Path],
    spec: SuiteSpec,
    out_dir: str | Path,
    device: str | None = None,
    progress: bool = True,
) -> dict:
    """Evaluate one model or several side by side (`--compare`); write eval.json, eval.md,
    predictions.jsonl and PNG plots into `out_dir`. Returns the eval.json content.

    MQAR samples follow each model's own training data: for an attnlab run trained on MQAR, the
    generator options it was trained with (power_a, random_non_queries, separator) are the defaults,
    and `spec.options["mqar"]` overrides them."""
    from ..archs import check_model_files
    from .loading import resolve_model_dir
    from .markdown_report import across_seeds, markdown_report, skip_lines
    from .plots import plot_heatmaps, plot_lines

    paths = [Path(p) for p in paths]
    for path in paths:  # every model's files, before anything is written
        check_model_files(resolve_model_dir(path))
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    report = {"suite": spec.to_dict(), "created": time.strftime("%Y-%m-%dT%H:%M:%S"), "models": []}
    backends_used(reset=True)  # each model's entry records the kernels its own evaluation ran
    with (out_dir / "predictions.jsonl").open("w") as log:
        for name, path in zip(model_names(paths), paths, strict=True):
            model, tokenizer, model_dir = load_model(path, device)
            trained = training_mqar_options(path, model_dir)
            mqar_options = {**trained, **spec.options.get("mqar", {})}
            model_spec = dataclasses.replace(spec, options={**spec.options, "mqar": mqar_options})
            if progress:
                print(f"attnlab eval: {name} ({model_dir}) on suite {spec.suite}", flush=True)
                if trained and "mqar" in spec.task_names:
                    print(f"  mqar options from its training config: {trained}", flush=True)
            start = time.perf_counter()
            result = run_suite(model, tokenizer, model_spec, progress)
            report["models"].append(
                {
                    "name": name,
                    "path": str(model_dir),
                    "seconds": round(time.perf_counter() - start, 2),
                    "mqar_options": mqar_options,
                    "cells": result.cells,
                    "kernels": kernel_record(reset=True),
                }
            )
            for row in result.predictions:
                log.write(json.dumps({"model": name, **row}) + "\n")
            if progress:
                for line in skip_lines(report["models"][-1]):
                    print(f"  {line}", flush=True)
            del model
    if seeds := across_seeds(report):  # the models are a sweep's seeds: also per variant
        report["across_seeds"] = seeds
    (out_dir / "eval.json").write_text(json.dumps(report, indent=2))
    (out_dir / "eval.md").write_text(markdown_report(report))
    plot_lines(report, out_dir / "accuracy_vs_length.png")
    plot_heatmaps(report, out_dir / "heatmap.png")
    return report


# The committed comparison (evals/KHOP_RESULTS.md): models trained by
# configs/sweeps/khop_mqar.yaml on 1- and 2-hop chains at 64-256 tokens, evaluated beyond their
# training length and at more hops. kv pairs scale with length (Zoology's seq/16, capped by the
# vocabulary), so longer contexts also hold more pairs. The MQAR generator options come from each
# run's training config (run_eval).
KHOP_MQAR_COMPARISON = SuiteSpec(suite="mqar", lengths=(64, 128, 256, 512), hops=(1, 2, 4), samples=128)


def compare_models(
    model_dirs: list[str | Path],
    out_dir: str | Path,
    spec: SuiteSpec | dict | None = None,
    device: str | None = None,
) -> dict:
    """Several trained models side by side on one suite (default: the k-hop MQAR comparison);
    writes the same files as `attnlab eval PATH --compare ...`."""
    spec = spec or KHOP_MQAR_COMPARISON
    spec = spec if isinstance(spec, SuiteSpec) else SuiteSpec.from_dict(spec)
    return run_eval(model_dirs, spec, out_dir, device)
