"""`attnlab bench state-precision`: how the error of a low-precision lightning state grows as
decoding goes on (docs/state_precision.md).

For each storage format (bf16, fp16, int8 with row or block scales; nearest or stochastic
rounding) an engine runs in lockstep with an fp32 one over the same text, teacher-forced one token
per step through the engine's slots (serve/teacher_forcing.py), so every step stores the state as
serving does. Per decode step, against the fp32 run: relative error of the states (all recurrent
layers), KL(p_fp32 || p_format) and max |logit difference|, and whether the greedy token differs.
Then, on MQAR-trained models, the eval's chain accuracy by length with each format, every token
fed as a decode.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from ..kernels import describe_kernels, kernel_record
from .config import EngineConfig
from .engine import LLMEngine
from .teacher_forcing import TeacherForcer

# name -> EngineConfig fields. "+sr": stochastic rounding on store.
FORMATS = {
    "fp32": {"state_dtype": "fp32"},
    "bf16": {"state_dtype": "bf16"},
    "bf16+sr": {"state_dtype": "bf16", "state_rounding": "stochastic"},
    "fp16": {"state_dtype": "fp16"},
    "fp16+sr": {"state_dtype": "fp16", "state_rounding": "stochastic"},
    "int8-row": {"state_dtype": "int8", "state_scales": "row"},
    "int8-row+sr": {"state_dtype": "int8", "state_scales": "row", "state_rounding": "stochastic"},
    "int8-block": {"state_dtype": "int8", "state_scales": "block"},
    "int8-block+sr": {"state_dtype": "int8", "state_scales": "block", "state_rounding": "stochastic"},
}
REPORT_STEPS = (1024, 4096, 16384)
STATE_EVERY = 8  # after step 512, state errors are read every 8th step (NaN between)


@dataclass
class PrecisionOptions:
    out: Path = Path("runs/state_precision")
    models: list[Path] = field(default_factory=list)  # LMs (lightning-bearing); empty: train the defaults
    mqar_models: list[Path] = field(default_factory=list)  # MQAR-trained, for the eval accuracy
    formats: list[str] = field(default_factory=lambda: [f for f in FORMATS if f != "fp32"])
    steps: int = 16384
    sequences: int = 4
    prefill: int = 16
    mqar_lengths: list[int] = field(default_factory=lambda: [64, 128, 256, 512])
    mqar_hops: list[int] = field(default_factory=lambda: [1, 2])
    mqar_samples: int = 64
    train_steps: int = 500  # for the default models
    jobs: int = 2  # models studied at once, each in its own process (threads split between them)
    seed: int = 0

    def check(self) -> None:
        unknown = [f for f in self.formats if f not in FORMATS]
        if unknown or not self.formats:
            raise ValueError(f"--formats {unknown or '(none)'}: allowed: {', '.join(FORMATS)}")
        for name in ("steps", "sequences", "prefill", "mqar_samples", "train_steps", "jobs"):
            if getattr(self, name) <= 0:
                raise ValueError(f"--{name.replace('_', '-')} {getattr(self, name)}: must be positive")
        for path in [*self.models, *self.mqar_models]:
            if not Path(path).exists():
                raise ValueError(f"model path {path}: does not exist")


# --- the decode study -----------------------------------------------------------------------------


def text_streams(tokenizer, n: int, length: int) -> list[list[int]]:
    """n token streams of `length` from the Python standard library's sources (the local corpus),
    taken from its last files (the ones a default 1% validation split holds out), one per file run."""
    from ..train import stdlib_sources

    files = stdlib_sources()[::-1]
    streams, buffer = [], []
    for path in files:
        text = Path(path).read_text(errors="replace")
        buffer.extend(tokenizer(text, add_special_tokens=False)["input_ids"])
        if len(buffer) >= length:
            streams.append(buffer[:length])
            buffer = []
            if len(streams) == n:
                return streams
    raise ValueError(f"the local corpus holds fewer than {n} streams of {length} tokens")


def _engine(model, fmt: str, length: int, sequences: int) -> LLMEngine:
    """An engine whose cache holds `sequences` sequences of `length` tokens and little more (the
    study runs nine engines at once; the cache manager allocates its whole budget up front)."""
    f = FORMATS[fmt]
    per_seq = model.state_bytes(length + 64, model.dtype, f["state_dtype"], f.get("state_scales", "row"))
    config = EngineConfig(
        cache_memory=int(sequences * per_seq * 1.25) + 2**23, max_model_len=length, max_num_seqs=sequences,
        max_num_batched_tokens=max(2048, sequences * 16), **f,
    )  # fmt: skip
    return LLMEngine(model, None, config)


def _kl(ref_logits: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
    """KL(p_ref || p) per row [N]."""
    ref, cur = torch.log_softmax(ref_logits, -1), torch.log_softmax(logits, -1)
    return (ref.exp() * (ref - cur)).sum(-1).clamp_min(0)


def decode_study(model, streams: list[list[int]], formats: list[str], prefill: int, progress=None) -> dict:
    """Lockstep decode of `streams` with fp32 and each format -> per-format per-step curves."""
    length, n = len(streams[0]), len(streams)
    names = ["fp32", *formats]
    forcers = {f: TeacherForcer(_engine(model, f, length, n), streams, prefill) for f in names}
    curves = {f: {"state_rel": [], "kl": [], "max_abs": [], "mismatch": []} for f in formats}
    seconds = dict.fromkeys(names, 0.0)
    try:
        step = 0
        while not forcers["fp32"].done:
            logits = {}
            for f, forcer in forcers.items():
                t0 = time.perf_counter()
                logits[f] = forcer.step()
                seconds[f] += time.perf_counter() - t0
            step += 1
            # States every step early on, then every STATE_EVERY-th (reading 9 engines' states is
            # the study's own cost, not serving's); logits every step.
            ref_states = forcers["fp32"].states() if step <= 512 or step % STATE_EVERY == 0 else None
            if ref_states is not None:
                ref_norm = sum(s.square().sum(dim=(1, 2, 3)) for s in ref_states).sqrt()  # [N]
            for f in formats:
                c = curves[f]
                rel = math.nan
                if ref_states is not None:
                    diff = sum(
                        (a - b).square().sum(dim=(1, 2, 3))
                        for a, b in zip(forcers[f].states(), ref_states, strict=True)
                    )
                    rel = (diff.sqrt() / ref_norm.clamp_min(1e-30)).mean().item()
                c["state_rel"].append(rel)
                c["kl"].append(_kl(logits["fp32"], logits[f]).mean().item())
                c["max_abs"].append((logits[f] - logits["fp32"]).abs().max().item())
                c["mismatch"].append((logits[f].argmax(-1) != logits["fp32"].argmax(-1)).tolist())
            if progress is not None:
                progress(step)
    finally:
        for forcer in forcers.values():
            forcer.close()
    decode_steps = length - prefill
    return {
        "curves": curves,
        "tokens_per_s": {f: (decode_steps + 1) * n / s for f, s in seconds.items()},
    }


def nanmean(values: list[float]) -> float:
    kept = [v for v in values if not math.isnan(v)]
    return sum(kept) / len(kept) if kept else math.nan


def first_divergence(mismatch: list[list[bool]]) -> list[int | None]:
    """Per sequence: the first step (1-based) whose greedy token differs from fp32's, or None."""
    n = len(mismatch[0]) if mismatch else 0
    out: list[int | None] = [None] * n
    for step, row in enumerate(mismatch, start=1):
        for i, differs in enumerate(row):
            if differs and out[i] is None:
                out[i] = step
    return out


def summarise(curves: dict, steps: int) -> dict:
    """Window means over (t/2, t] at each report step, plus the first divergence per sequence."""
    out = {}
    for fmt, c in curves.items():
        at = {}
        for t in (*REPORT_STEPS, steps):
            if t > len(c["kl"]):
                continue
            lo = t // 2
            at[str(t)] = {key: nanmean(c[key][lo:t]) for key in ("state_rel", "kl", "max_abs")}
            rows = c["mismatch"][lo:t]
            at[str(t)]["mismatch_rate"] = sum(map(sum, rows)) / max(1, len(rows) * len(rows[0]))
        out[fmt] = {"at": at, "first_divergence": first_divergence(c["mismatch"])}
    return out


# --- the eval: MQAR chain accuracy with every token stored -----------------------------------------


class EngineScorer(torch.nn.Module):
    """Looks like a model to `evals.token_tasks.chain_accuracy`: logits [B, T, V] of a batch, every
    token fed through the engine as a decode (so each token's state is stored in the format)."""

    def __init__(self, model, fmt: str, length: int, batch: int):
        super().__init__()
        self.model = model  # its parameters tell chain_accuracy the device
        self.engine = _engine(model, fmt, length, batch)

    def forward(self, input_ids, use_cache=False):
        forcer = TeacherForcer(self.engine, input_ids.tolist(), prefill=1)
        try:
            rows = []
            while not forcer.done:
                rows.append(forcer.step())
        finally:
            forcer.close()
        return type("Out", (), {"logits": torch.stack(rows, 1)})()  # [B, T, V]


def mqar_accuracy(
    path: Path, formats: list[str], lengths: list[int], hops: list[int], samples: int, seed: int
):
    from ..evals import chain_accuracy, load_model, mqar_cell, training_mqar_options

    model, _, model_dir = load_model(path, "cpu")
    options = training_mqar_options(path, model_dir)
    rows = []
    for length in lengths:
        for h in hops:
            try:
                ids, labels, _ = mqar_cell(model.config.vocab_size, length, h, samples, seed, **options)
            except ValueError as err:
                rows.append({"length": length, "hops": h, "skipped": str(err)})
                continue
            row = {"length": length, "hops": h}
            for fmt in ["fp32", *formats]:
                scorer = EngineScorer(model, fmt, length, min(samples, 16))
                with torch.inference_mode():
                    row[fmt] = chain_accuracy(scorer, ids, labels, h, min(samples, 16))["chain"]
            rows.append(row)
    return rows


# --- default models ------------------------------------------------------------------------------

# name -> (train config, layers, whether --train-steps applies)
DEFAULT_LMS = {"lightning": ("stdlib_lm.yaml", "LLLL", True), "hybrid-3to1": ("stdlib_lm.yaml", "LLLF", True)}
DEFAULT_MQAR = {"khop-mqar-FL": ("khop_mqar.yaml", "FL", False)}


def train_defaults(out: Path, steps: int) -> tuple[list[Path], list[Path]]:
    """Train (or reuse) the default models under out/models: two byte-level LMs on the local corpus
    (configs/train/stdlib_lm.yaml for `steps` steps: 4 lightning layers, and MiniMax's 3:1 order
    LLLF) and the k-hop MQAR hybrid whose lightning layer does the lookup
    (configs/train/khop_mqar.yaml, FL)."""
    from importlib import resources

    from ..train import parse_args, train

    configs = Path(str(resources.files("attnlab.configs").joinpath("train")))
    made = {}
    for name, (config, layers, scaled) in {**DEFAULT_LMS, **DEFAULT_MQAR}.items():
        run_dir = out / "models" / name
        made[name] = run_dir
        if (run_dir / "hf" / "config.json").exists():
            continue
        words = ["--config", str(configs / config), "--model.layers", layers, "--run_dir", str(run_dir)]
        if scaled:
            words += ["--trainer.max_steps", str(steps)]
        cfg, _ = parse_args(words)
        result = train(cfg)
        if result["status"] != "finished":
            raise RuntimeError(f"training the default model {name} stopped: {result.get('message')}")
    return [made[n] for n in DEFAULT_LMS], [made[n] for n in DEFAULT_MQAR]


# --- the run ---------------------------------------------------------------------------------------


def _decode_job(path: Path, opts: PrecisionOptions, threads: int) -> tuple[dict, dict]:
    """One model's decode study (in a worker process) -> (its results entry, its curves)."""
    from ..evals import load_model

    torch.set_num_threads(threads)
    torch.manual_seed(opts.seed)
    model, tokenizer, _ = load_model(path, "cpu")
    if tokenizer is None:
        raise ValueError(f"model {path}: has no tokenizer; the decode study needs a language model")
    length = opts.steps + opts.prefill
    streams = text_streams(tokenizer, opts.sequences, length)
    t0 = time.perf_counter()
    name = Path(path).name

    def progress(step: int) -> None:
        if step % 1024 == 0:
            print(f"  {name}: step {step} / {opts.steps + 1} ({time.perf_counter() - t0:.0f} s)", flush=True)

    study = decode_study(model, streams, opts.formats, opts.prefill, progress)
    bytes_per_seq = {
        f: model.state_bytes(
            length, model.dtype, FORMATS[f]["state_dtype"], FORMATS[f].get("state_scales", "row")
        )
        for f in ["fp32", *opts.formats]
    }
    entry = {
        "layers": model.config.layers,
        "summary": summarise(study["curves"], opts.steps),
        "tokens_per_s": study["tokens_per_s"],
        "state_bytes_per_seq": bytes_per_seq,
        "seconds": time.perf_counter() - t0,
    }
    return entry, study["curves"]


def _mqar_job(path: Path, opts: PrecisionOptions, threads: int) -> list[dict]:
    torch.set_num_threads(threads)
    return mqar_accuracy(path, opts.formats, opts.mqar_lengths, opts.mqar_hops, opts.mqar_samples, opts.seed)


def _job_key(kind: str, path, opts: PrecisionOptions) -> str:
    """A hash of the model's files and the options one job's result depends on."""
    import hashlib

    model_dir = Path(path)
    stamp = sorted(
        (str(f.relative_to(model_dir)), f.stat().st_size, f.stat().st_mtime_ns)
        for f in model_dir.rglob("*")
        if f.is_file() and f.suffix in (".safetensors", ".json", ".yaml")
    )
    if kind == "decode":
        fields = (opts.formats, opts.steps, opts.sequences, opts.prefill, opts.seed)
    else:
        fields = (opts.formats, opts.mqar_lengths, opts.mqar_hops, opts.mqar_samples, opts.seed)
    digest = hashlib.sha256(repr((str(model_dir.resolve()), stamp, fields)).encode()).hexdigest()[:12]
    return f"{model_dir.name}-{digest}"


def run(opts: PrecisionOptions) -> dict:
    """Every model's study, `opts.jobs` models at a time in worker processes; writes the report."""
    import multiprocessing
    import os
    from concurrent.futures import ProcessPoolExecutor

    opts.check()
    opts.out.mkdir(parents=True, exist_ok=True)
    models, mqar_models = opts.models, opts.mqar_models
    if not models:
        models, trained_mqar = train_defaults(opts.out, opts.train_steps)
        mqar_models = mqar_models or trained_mqar
    results = {"options": {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(opts).items()}}
    results["options"]["models"] = [str(m) for m in models]
    results["options"]["mqar_models"] = [str(m) for m in mqar_models]
    threads = max(1, (os.cpu_count() or 1) // opts.jobs)
    jobs = [("decode", p) for p in models] + [("mqar", p) for p in mqar_models]
    # Each finished job is kept in OUT/parts, keyed by what decides its result, so a rerun (after an
    # interruption, or with one more model) only runs what is missing.
    parts = [opts.out / "parts" / f"{kind}-{_job_key(kind, p, opts)}.pt" for kind, p in jobs]
    todo = [i for i, part in enumerate(parts) if not part.exists()]
    done: dict[int, object] = {
        i: torch.load(parts[i], weights_only=False) for i in range(len(jobs)) if i not in todo
    }
    if todo:
        (opts.out / "parts").mkdir(exist_ok=True)
        context = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(max_workers=min(opts.jobs, len(todo)), mp_context=context) as pool:
            futures = {
                i: pool.submit(
                    _decode_job if jobs[i][0] == "decode" else _mqar_job, Path(jobs[i][1]), opts, threads
                )
                for i in todo
            }
            for i, future in futures.items():
                done[i] = future.result()
                tmp = parts[i].with_suffix(".tmp")
                torch.save(done[i], tmp)
                tmp.replace(parts[i])
    done = [done[i] for i in range(len(jobs))]
    results["decode"], results["mqar"], curves = {}, {}, {}
    for (kind, p), out in zip(jobs, done, strict=True):
        table = results[kind]
        name = Path(p).name
        name = name if name not in table else f"{name} ({len(table) + 1})"  # two paths, one folder name
        if kind == "decode":
            table[name], curves[name] = out
        else:
            table[name] = out
    from .state_precision_report import markdown, plot

    plot(curves, opts.out / "state_precision.png")
    results["kernels"] = kernel_record()
    (opts.out / "state_precision.json").write_text(json.dumps(results, indent=1))
    (opts.out / "state_precision.md").write_text(
        markdown(results) + f"\n{describe_kernels(results['kernels'])}\n"
    )
    return results
