"""`attnlab bench spec`: what speculative decoding (serve/speculative.py) buys on this machine —
acceptance rate and speedup over plain decoding, for n-gram lookup and for a draft model.

Models (serve/spec_models.py): a 4-layer target per family — full (FFFF), lightning (LLLL) and the
3:1 hybrid (LLLF) — and 1-layer drafts (F; L, which the hybrid shares), all byte-level LMs trained
on the same code for the same steps. Workloads (serve/spec_workloads.py): held-out standard-library
code, and the eval suite's copy task. For each family x workload x batch (requests decoding
together) the modes `plain`, `ngram` and `draft` (k drafts per step) decode the same prompts
greedily:

- output tokens/s over the wall time of the whole batch, prefill included; decode-only tokens/s
  from the requests' token times (first token to last);
- acceptance rate (accepted / proposed drafts) and accepted drafts per verification;
- speedup over `plain` of the same family, workload and batch; `outputs_match`: greedy speculative
  tokens equal the plain ones for every request (they must).

A batch of b runs the workload's prompts in groups of b (b = 1: one after another), so every batch
size decodes the same tokens. Each configuration is warmed up on its first group, then the modes
take turns for `repeats` rounds (this machine is shared: a slow spell hits every mode alike);
medians are reported with their spread.
"""

from __future__ import annotations

import json
import os
import statistics
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from tqdm.auto import tqdm

from ..common import check_subset
from ..kernels import describe_kernels, kernel_record
from .bench import environment
from .config import EngineConfig
from .engine import LLMEngine
from .sampling import SamplingParams
from .spec_models import FAMILIES, TrainSettings, draft_name, prepare_models
from .spec_workloads import (
    WORKLOADS,
    Workload,
    code_workload,
    copied_fraction,
    copy_workload,
    held_out_files,
    repeated_fraction,
)

MODES = ("plain", "ngram", "draft")


@dataclass
class SpecOptions:
    out: Path = Path("runs/bench-spec")
    families: list[str] = field(default_factory=lambda: list(FAMILIES))
    workloads: list[str] = field(default_factory=lambda: list(WORKLOADS))
    batches: list[int] = field(default_factory=lambda: [1, 8])
    k: int = 3  # drafts per decoding request and step
    prompt_len: int = 384  # tokens (bytes) per prompt
    new_tokens: int = 64  # greedy tokens per request
    prompts: int = 8  # per workload; a batch of b runs them in groups of b
    repeats: int = 5  # timed rounds per configuration, after one warm-up
    models: Path | None = None  # folder of trained models to reuse (default: OUT/models)
    threads: int | None = 1
    jobs: int = 2  # models trained at once, one process each
    seed: int = 0
    device: str = "cpu"
    train: TrainSettings = field(default_factory=TrainSettings)

    def check(self) -> None:
        """Errors name the flag and what is allowed."""
        check_subset(self.families, FAMILIES, "--families")
        check_subset(self.workloads, WORKLOADS, "--workloads")
        if not self.batches or any(b <= 0 for b in self.batches):
            raise ValueError(f"--batches {self.batches}: must be positive integers")
        for name in ("k", "prompt_len", "new_tokens", "prompts", "repeats", "jobs"):
            if getattr(self, name) <= 0:
                raise ValueError(f"--{name.replace('_', '-')} {getattr(self, name)}: must be positive")
        if self.train.steps <= 0:
            raise ValueError(f"--train-steps {self.train.steps}: must be positive")
        bad = [b for b in self.batches if self.prompts % b]
        if bad:
            raise ValueError(
                f"--prompts {self.prompts}: must be a multiple of every batch size (not of {bad}), so "
                "every batch size decodes the same prompts"
            )
        if self.models is not None and not Path(self.models).is_dir():
            raise ValueError(f"--models {self.models}: no such folder")
        if self.prompt_len + self.new_tokens > self.train.seq_len:
            print(
                f"attnlab bench spec: note: --prompt-len + --new-tokens = {self.prompt_len + self.new_tokens} "
                f"is longer than the {self.train.seq_len} tokens the models train on",
                flush=True,
            )


# --- one measurement ------------------------------------------------------------------------------


def engine_for(model, opts: SpecOptions, batch: int, mode: str, draft=None) -> LLMEngine:
    """An engine for `batch` requests of the workload; its whole batch prefills in one step."""
    max_len = opts.prompt_len + opts.new_tokens
    cache = 4 * batch * model.state_bytes(max_len + opts.k + 16) + (8 << 20)
    options = {} if mode == "plain" else {"speculative": mode, "num_speculative_tokens": opts.k}
    config = EngineConfig(
        cache_memory=cache, max_num_seqs=batch, max_model_len=max_len,
        max_num_batched_tokens=max(2048, batch * (opts.prompt_len + opts.k + 1)), **options,
    )  # fmt: skip
    return LLMEngine(model, None, config, draft_model=draft if mode == "draft" else None)


def decode_groups(engine: LLMEngine, groups: list[list[list[int]]], new_tokens: int) -> dict:
    """Each group's prompts decode together, one group after another -> tokens, times, drafts."""
    params = SamplingParams(max_tokens=new_tokens, ignore_eos=True)
    before = engine.speculation.stats() if engine.speculation else None
    tokens, wall, decode_tokens, decode_s, step_s = [], 0.0, 0, 0.0, []
    for group in groups:
        start = time.perf_counter()
        ids = [engine.add_request(p, params, arrival_time=start) for p in group]
        done, steps = {}, []
        while engine.has_unfinished():
            t0 = time.perf_counter()
            for out in engine.step():
                if out.finished:
                    done[out.request_id] = out
            steps.append(time.perf_counter() - t0)
        wall += time.perf_counter() - start
        step_s += steps[1:]  # the decode steps: the first step prefilled the whole group
        outs = [done[i] for i in ids]
        tokens += [o.token_ids for o in outs]
        decode_tokens += sum(len(o.token_ids) - 1 for o in outs)
        decode_s += max(o.metrics.token_times[-1] for o in outs) - min(o.metrics.token_times[0] for o in outs)
    n = sum(len(t) for t in tokens)
    row = {
        "tokens_per_s": n / wall,
        "decode_tokens_per_s": decode_tokens / decode_s if decode_s > 0 else None,
        "wall_s": wall,
        "step_s": statistics.median(step_s) if step_s else None,
        "decode_steps": len(step_s),
        "tokens": tokens,
    }
    if before is not None:
        after = engine.speculation.stats()
        row.update({key: after[key] - before[key] for key in ("proposed", "accepted", "verifications")})
    return row


def summarize(rows: list[dict], plain: dict | None, batch_tokens: list[list[int]] | None) -> dict:
    """Repeats of one mode -> medians with their spread, acceptance, and the check against plain."""
    rates = [r["tokens_per_s"] for r in rows]
    decode = [r["decode_tokens_per_s"] for r in rows if r["decode_tokens_per_s"] is not None]
    out = {
        "tokens_per_s": statistics.median(rates),
        "tokens_per_s_min": min(rates),
        "tokens_per_s_max": max(rates),
        "spread": (max(rates) - min(rates)) / statistics.median(rates),
        "decode_tokens_per_s": statistics.median(decode) if decode else None,
        "step_s": statistics.median(steps) if (steps := [r["step_s"] for r in rows if r["step_s"]]) else None,
        "decode_steps": rows[-1]["decode_steps"],
        "wall_s": [r["wall_s"] for r in rows],
    }
    if "proposed" in rows[0]:
        last = rows[-1]  # greedy: every repeat proposes and accepts the same drafts
        out.update({key: last[key] for key in ("proposed", "accepted", "verifications")})
        out["acceptance_rate"] = last["accepted"] / last["proposed"] if last["proposed"] else 0.0
        out["accepted_per_verification"] = (
            last["accepted"] / last["verifications"] if last["verifications"] else 0.0
        )
        out["repeats_agree"] = all(
            (r["proposed"], r["accepted"]) == (last["proposed"], last["accepted"]) for r in rows
        )
    if plain is not None:
        out["speedup"] = out["tokens_per_s"] / plain["tokens_per_s"]
        if out["decode_tokens_per_s"] and plain["decode_tokens_per_s"]:
            out["decode_speedup"] = out["decode_tokens_per_s"] / plain["decode_tokens_per_s"]
        if out["step_s"] and plain["step_s"]:
            out["step_cost"] = out["step_s"] / plain["step_s"]  # a speculative decode step / a plain one
        out["outputs_match"] = all(r["tokens"] == batch_tokens for r in rows)
        if not out["outputs_match"]:
            out["mismatches"] = first_mismatches(batch_tokens, rows[-1]["tokens"])
    return out


def first_mismatches(reference: list[list[int]], got: list[list[int]]) -> list[dict]:
    """Per request that differs: where, and the tokens from there (for the report)."""
    found = []
    for i, (a, b) in enumerate(zip(reference, got, strict=True)):
        if a != b:
            at = next((j for j, (x, y) in enumerate(zip(a, b, strict=False)) if x != y), min(len(a), len(b)))
            found.append({"request": i, "token": at, "plain": a[at : at + 8], "speculative": b[at : at + 8]})
    return found


def measure_cell(
    models: dict, family: str, workload: Workload, batch: int, opts: SpecOptions, bar=None
) -> dict:
    """One family x workload x batch: warm-up, then the modes in turns for `repeats` rounds."""
    target, draft = models[f"target-{family}"], models[draft_name(family)]
    groups = [workload.prompts[i : i + batch] for i in range(0, len(workload.prompts), batch)]
    engines = {mode: engine_for(target, opts, batch, mode, draft) for mode in MODES}
    for mode, engine in engines.items():
        if bar is not None:
            bar.set_postfix_str(f"{family} {workload.name} b{batch}: warm-up {mode}")
        decode_groups(engine, groups[:1], opts.new_tokens)
    rows = {mode: [] for mode in MODES}
    for r in range(opts.repeats):
        for mode, engine in engines.items():
            if bar is not None:
                bar.set_postfix_str(f"{family} {workload.name} b{batch}: {mode} {r + 1}/{opts.repeats}")
            rows[mode].append(decode_groups(engine, groups, opts.new_tokens))
    for engine in engines.values():
        assert engine.cache.all_free(), "the engine holds memory after its requests finished"
    plain_tokens = rows["plain"][0]["tokens"]
    cell = {"family": family, "workload": workload.name, "batch": batch}
    cell["plain"] = summarize(rows["plain"], None, None)
    cell["plain"]["repeats_agree"] = all(r["tokens"] == plain_tokens for r in rows["plain"])
    for mode in MODES[1:]:
        cell[mode] = summarize(rows[mode], cell["plain"], plain_tokens)
    cell["tokens"] = plain_tokens
    return cell


# --- the run --------------------------------------------------------------------------------------


def load_models(records: dict, device: str) -> tuple[dict, object]:
    from ..evals import load_model

    models, tokenizer = {}, None
    for name, record in records.items():
        model, tok, _ = load_model(record["path"], device)
        models[name] = model
        tokenizer = tokenizer or tok
    if tokenizer is None:
        raise ValueError("none of the models has a tokenizer; the benchmark needs the byte tokenizer")
    return models, tokenizer


def build_workloads(opts: SpecOptions, records: dict, tokenizer) -> dict[str, Workload]:
    from ..train import stdlib_sources

    workloads = {}
    for name in opts.workloads:
        if name == "copy":
            workloads[name] = copy_workload(tokenizer, opts.prompts, opts.prompt_len, opts.seed)
            continue
        held = None  # files held out from every model's training
        for record in records.values():
            corpus = record["corpus"]
            files = held_out_files(corpus["files"] or stdlib_sources(), corpus["seed"], corpus["max_chars"])
            held = set(files) if held is None else held & set(files)
        workloads[name] = code_workload(
            tokenizer, sorted(held), opts.prompts, opts.prompt_len, opts.new_tokens, opts.seed
        )
    return workloads


def run(opts: SpecOptions, progress: bool = True) -> dict:
    opts.check()
    started = time.perf_counter()
    out = Path(opts.out)
    out.mkdir(parents=True, exist_ok=True)  # a folder that cannot be written fails first
    if opts.threads:
        torch.set_num_threads(opts.threads)
        opts.train.threads = opts.threads
    opts.train.progress = progress
    if not progress:
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()  # "Loading weights" / "Writing model shards"
    folder = Path(opts.models) if opts.models is not None else out / "models"
    say = (lambda text: print(f"attnlab bench spec: {text}", flush=True)) if progress else (lambda text: None)
    records = prepare_models(folder, opts.families, opts.train, opts.jobs, say)
    trained_s = time.perf_counter() - started
    torch.manual_seed(opts.seed)
    models, tokenizer = load_models(records, opts.device)
    workloads = build_workloads(opts, records, tokenizer)
    kernel_record(reset=True)  # what the measurements ran, not the training
    load_before = os.getloadavg()
    cells = []
    total = len(opts.families) * len(workloads) * len(opts.batches)
    bar = tqdm(total=total, desc="bench spec", unit="cell", disable=not progress)
    with torch.inference_mode():
        for family in opts.families:
            for workload in workloads.values():
                for batch in opts.batches:
                    cell = measure_cell(models, family, workload, batch, opts, bar)
                    cell["repeated"] = statistics.mean(
                        repeated_fraction(p, t) for p, t in zip(workload.prompts, cell["tokens"], strict=True)
                    )
                    if workload.answers is not None:
                        cell["copied"] = statistics.mean(
                            copied_fraction(tokenizer, a, t)
                            for a, t in zip(workload.answers, cell["tokens"], strict=True)
                        )
                    cells.append(cell)
                    bar.update(1)
    bar.close()
    results = {
        "options": {
            **{k: str(v) if isinstance(v, Path) else v for k, v in asdict(opts).items() if k != "train"},
            "train": asdict(opts.train),
            "modes": list(MODES),
        },
        "machine": {
            **environment(),
            "loadavg_before": load_before,
            "loadavg_after": os.getloadavg(),
        },
        "models": records,
        "drafts": {family: draft_name(family) for family in opts.families},
        "workloads": {
            name: {
                "prompts": len(w.prompts),
                "prompt_tokens": [len(p) for p in w.prompts],
                "sources": w.sources,
            }
            for name, w in workloads.items()
        },
        "cells": cells,
        "kernels": kernel_record(),
        "seconds": {"models": trained_s, "total": time.perf_counter() - started},
    }
    write_outputs(results, out)
    return results


def write_outputs(results: dict, out: Path) -> None:
    from .spec_bench_report import markdown

    tmp = out / "results.json.tmp"
    tmp.write_text(json.dumps(results, indent=1))
    tmp.replace(out / "results.json")
    (out / "spec.md").write_text(markdown(results) + f"\n{describe_kernels(results['kernels'])}\n")


def command(args) -> int:
    """`attnlab bench spec` (registered in serve/cli.py) -> exit status; 2 for a bad flag value."""
    import sys

    opts = SpecOptions(
        out=args.out, families=args.families, workloads=args.workloads, batches=args.batches, k=args.k,
        prompt_len=args.prompt_len, new_tokens=args.new_tokens, prompts=args.prompts, repeats=args.repeats,
        models=args.models, threads=args.threads, jobs=args.jobs, seed=args.seed,
        train=TrainSettings(steps=args.train_steps, hidden=args.hidden),
    )  # fmt: skip
    try:
        opts.check()
    except ValueError as e:
        print(f"attnlab bench spec: error: {e}", file=sys.stderr)
        return 2
    Path(opts.out).mkdir(parents=True, exist_ok=True)  # a folder that cannot be written fails first
    print(f"attnlab bench spec: {', '.join(opts.families)} x {', '.join(opts.workloads)} at batch "
          f"{opts.batches}, k {opts.k} -> {opts.out}", flush=True)  # fmt: skip
    try:
        run(opts)
    except (ValueError, FileNotFoundError) as e:
        print(f"attnlab bench spec: error: {e}", file=sys.stderr)
        return 2
    print((Path(opts.out) / "spec.md").read_text())
    return 0
