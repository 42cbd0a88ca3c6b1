"""`attnlab bench quant`: does INT4 weight quantization hurt long-context recall, per attention
family, and does quantization-aware training recover what post-training quantization loses?

Families (serve/quant_bench_models.py), each of width 64 and trained on the k-hop MQAR
curriculum of configs/train/khop_mqar.yaml: `full` (FF) and `lightning` (LL), the k-hop setup's
2-layer models, and `hybrid-7to1` (7 lightning : 1 softmax, softmax first: FLLLLLLL; why these
depths and this order: quant_bench_models.py); optionally a byte-level LM on the
local corpus (configs/train/stdlib_lm.yaml, shortened) for the loss comparison. Each family is
trained twice: plainly, and with torchao fake quant from half-way (its QAT twin). Variants
(serve/quant_bench_variants.py): `fp32` (the trained model as it is: training runs in float32,
so it is the reference), `bf16` (its weights rounded to bfloat16, run in bfloat16: the baseline
INT4 serving replaces), `int4-ptq` (the default INT4 scheme applied to it after training) and
`int4-qat` (the QAT twin converted with its recorded scheme).

Per (family, variant): validation loss on the held-out rows the trainer validated on; k-hop MQAR
chain accuracy by length x hops (the eval suite's token task); retrieval and induction head scores
per (layer, head), and whether the fp32 model's top heads are still the top heads after
quantization (top-k overlap, Spearman's rho of all scores); weight bytes (packed INT4 bytes for
the INT4 models); decode tokens/s through the serving engine (same prompts, greedy, batch 8).

Outputs under --out: results.json (everything, with options and environment), quant.md (a table
per family), quant.png (accuracy vs length per family, a line per variant), models/ (the training
runs and their configs, reused by a rerun), bf16/ and int4/ (the variants' model folders).

The default run took 22.5 minutes on the development machine's 2 cores with nothing else running
(training 20.9: 165-199 s per full / lightning run, 599-653 s per hybrid-7to1 run, ~205 s per text
run, 2 at a time, 1 thread each; measuring 0.8; decode speed 0.8). At 2000 steps the 2-layer full
model learns k-hop recall (93 % of chains over lengths 64-512 and 1-4 hops), lightning does not
(44 % of 1-hop chains at 64 tokens, none at 2 hops: as in evals/KHOP_RESULTS.md) and the hybrid
half does (52 % at 64 tokens, 1 hop). quant.md flags a family whose fp32 model has not learned
recall; its loss, head-score and size comparisons stand, its accuracy comparison says little.
"""

from __future__ import annotations

import json
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from ..common import check_subset
from ..kernels import describe_kernels, kernel_record
from .bench import environment
from .quant_bench_heads import survival
from .quant_bench_measure import MeasureSettings, measure_family
from .quant_bench_models import (
    FAMILIES,
    TEXT,
    TrainSettings,
    layout_of,
    prepare_runs,
    quiet_model_io,
    run_specs,
)
from .quant_bench_speed import SpeedSettings, decode_speed
from .quant_bench_variants import VARIANTS, write_variants

GROUP_SIZE = 32  # the default scheme's: must divide every quantized in_features


@dataclass
class QuantBenchOptions:
    out: Path = Path("runs/bench-quant")
    families: list[str] = field(default_factory=lambda: list(FAMILIES))
    top_k: int = 3  # heads per probe whose survival is reported
    min_head_score: float = 0.1  # ... of those scoring at least this (a 1 % copier is noise)
    jobs: int = 2  # training runs (then families measured) at once, one process each
    threads: int = 1  # torch threads of each worker and of the decode-speed measurement
    progress_every: float = 60.0  # seconds between progress lines while training
    train: TrainSettings = field(default_factory=TrainSettings)
    measure: MeasureSettings = field(default_factory=MeasureSettings)
    speed: SpeedSettings = field(default_factory=SpeedSettings)

    def check(self) -> None:
        """Errors name the flag and what it allows (the CLI's types check each value alone)."""
        from ..probes import probe_names

        check_subset(self.families, FAMILIES, "--families")
        check_subset(self.measure.probes, probe_names(), "--probes")
        t = self.train
        if t.steps < 2:
            raise ValueError(
                f"--train-steps {t.steps}: must be at least 2 (the QAT twin turns fake quant on mid-run)"
            )
        if t.text and t.text_steps < 2:
            raise ValueError(f"--text-steps {t.text_steps}: must be at least 2 (or --no-text)")
        if not 0 < t.qat_start < 1:
            raise ValueError(
                f"--qat-start {t.qat_start}: must be in (0, 1), the fraction of the steps before fake quant"
            )
        for flag, value in (("--hidden", t.hidden), ("--intermediate", t.intermediate)):
            if value % GROUP_SIZE:
                raise ValueError(
                    f"{flag} {value}: must be a multiple of {GROUP_SIZE} (the INT4 group size divides "
                    "every quantized layer's inputs)"
                )
        if t.hidden % t.heads:
            raise ValueError(f"--heads {t.heads}: must divide --hidden {t.hidden}")
        layers = min(len(layout_of(f)) for f in self.families)
        heads = layers * t.heads
        if not 1 <= self.top_k <= heads:
            raise ValueError(
                f"--top-k {self.top_k}: must be in 1..{heads} ({layers} layers x --heads {t.heads})"
            )
        if not 0 <= self.min_head_score <= 1:
            raise ValueError(
                f"--min-head-score {self.min_head_score}: must be in [0, 1] (head scores are rates)"
            )
        for name in ("jobs", "threads"):
            if getattr(self, name) <= 0:
                raise ValueError(f"--{name} {getattr(self, name)}: must be positive")


def _say(progress: bool):
    return (lambda line: print(line, flush=True)) if progress else (lambda line: None)


def measure_all(opts: QuantBenchOptions, runs: dict, folders: dict, say) -> dict:
    """measure_family for every family, `opts.jobs` at once in spawned workers -> {family: ...}."""
    names = list(folders)
    args = {
        f: (f, {v: folders[f][v]["folder"] for v in VARIANTS}, runs[f]["path"], f == TEXT, opts.measure)
        for f in names
    }
    out, started = {}, time.perf_counter()
    if opts.jobs == 1 or len(names) == 1:
        for f in names:
            out[f] = measure_family(*args[f])
            say(f"measured {f} ({time.perf_counter() - started:.0f} s)")
        return out
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor, as_completed

    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=min(opts.jobs, len(names)), mp_context=context) as pool:
        futures = {pool.submit(measure_family, *args[f]): f for f in names}
        for future in as_completed(futures):
            out[futures[future]] = future.result()
            say(f"measured {futures[future]} ({time.perf_counter() - started:.0f} s)")
    return {f: out[f] for f in names}


def family_entry(
    family: str, runs: dict, made: dict, measured: dict, speed: dict, top_k: int, min_score: float
) -> dict:
    """One family's results: its runs, and per variant the measurements, speed and head survival."""
    variants = {}
    base_heads = measured["fp32"]["heads"]
    for v in VARIANTS:
        entry = {**measured[v], "scheme": made[v]["scheme"], "decode": speed[v]}
        if v != "fp32":
            entry["survival"] = {
                probe: survival(
                    base_heads[probe]["scores"], entry["heads"][probe]["scores"], top_k, min_score
                )
                for probe in base_heads
            }
        variants[v] = entry
    return {
        "layers": runs[family]["layers"],
        "text": family == TEXT,
        "runs": {"base": family, "qat": f"{family}-qat"},
        "variants": variants,
    }


def run(opts: QuantBenchOptions, progress: bool = True) -> dict:
    """Train (or reuse) the runs, make the INT4 variants, measure them; write the three outputs."""
    from .quant_bench_report import markdown, plot

    opts.check()
    quiet_model_io()
    say = _say(progress)
    out = Path(opts.out)
    out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    specs = run_specs(opts.families, opts.train.text)
    runs = prepare_runs(out / "models", specs, opts.train, opts.jobs, say, opts.progress_every)
    phases = {"train": time.perf_counter() - started}
    families = [*opts.families, *([TEXT] if opts.train.text else [])]
    made = {f: write_variants(out, runs, f) for f in families}
    say(f"wrote the bf16 and INT4 models of {', '.join(families)} in {out / 'bf16'} and {out / 'int4'}")
    measured = measure_all(opts, runs, made, say)
    phases["measure"] = time.perf_counter() - started - phases["train"]
    torch.set_num_threads(opts.threads)
    speed = {}
    for f in families:
        speed[f] = decode_speed({v: made[f][v]["folder"] for v in VARIANTS}, opts.speed)
        say(
            f"decode speed of {f}: "
            + ", ".join(f"{v} {s['tokens_per_s']:.0f} tok/s" for v, s in speed[f].items())
        )
    phases["speed"] = time.perf_counter() - started - phases["train"] - phases["measure"]
    options = asdict(opts)
    options["out"] = str(out)
    results = {
        "options": options,
        "environment": environment(),
        "runs": runs,
        "families": {
            f: family_entry(f, runs, made[f], measured[f], speed[f], opts.top_k, opts.min_head_score)
            for f in families
        },
        "kernels": kernel_record(),
        "wall_s": time.perf_counter() - started,
        "phases_s": phases,  # train (0 when every run was reused), measure, speed
    }
    (out / "results.json").write_text(json.dumps(results, indent=1))
    (out / "quant.md").write_text(markdown(results) + f"\n{describe_kernels(results['kernels'])}\n")
    plot(results, out / "quant.png")
    return results


def command(args) -> int:
    """`attnlab bench quant` (registered in serve/cli.py) -> exit status; 2 for a bad flag value."""
    train = TrainSettings(
        steps=args.train_steps, qat_start=args.qat_start, hidden=args.hidden, heads=args.heads,
        intermediate=args.intermediate, val_examples=args.val_examples, text=args.text,
        text_steps=args.text_steps, threads=args.threads,
    )  # fmt: skip
    measure = MeasureSettings(
        lengths=args.lengths, hops=args.hops, samples=args.samples, probes=args.probes,
        niah_lengths=args.probe_lengths, seed=args.seed, threads=args.threads,
    )  # fmt: skip
    speed = SpeedSettings(
        batch=args.batch, prompt_len=args.prompt_len, new_tokens=args.new_tokens, repeats=args.repeats,
        seed=args.seed,
    )  # fmt: skip
    opts = QuantBenchOptions(
        out=args.out, families=args.families, top_k=args.top_k, min_head_score=args.min_head_score,
        jobs=args.jobs, threads=args.threads,
        train=train, measure=measure, speed=speed,
    )  # fmt: skip
    try:
        opts.check()
    except ValueError as e:
        print(f"attnlab bench quant: error: {e}", file=sys.stderr)
        return 2
    Path(opts.out).mkdir(parents=True, exist_ok=True)  # a folder that cannot be written fails first
    print(f"attnlab bench quant: {', '.join(opts.families)}{' + text LM' if train.text else ''}, "
          f"{', '.join(VARIANTS)} -> {opts.out}", flush=True)  # fmt: skip
    try:
        run(opts)
    except ValueError as e:  # e.g. a run dir that finished with another config
        print(f"attnlab bench quant: error: {e}", file=sys.stderr)
        return 2
    print((Path(opts.out) / "quant.md").read_text())
    return 0
