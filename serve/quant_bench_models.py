"""The quantization benchmark's training runs (serve/quant_bench.py): per attention family one k-hop
MQAR run and its QAT twin, and optionally a byte-level LM on the local corpus and its QAT twin.

The families are the k-hop MQAR setup's models at width `hidden` (64, as configs/train/khop_mqar.yaml):
`full` and `lightning` are its 2-layer FF and LL (evals/KHOP_RESULTS.md); `hybrid-7to1` needs 8
layers for MiniMax-01's 7 lightning : 1 softmax ratio, and puts the softmax layer first. Why not 8
layers for all three, and why softmax first (measured on the development machine, the 64-token
1-hop slice alone, lr 3e-3): 2-layer FF jumps from 34 % to 89 % answer accuracy between steps 400 and
500; 4- and 8-layer all-softmax models crawl to 42-43 % by steps 800-1000 without that jump (at
lr 1e-3 too); at step 500 the 8-layer hybrid reaches 33 % with its softmax layer first (FLLLLLLL)
and 19 % with it last (LLLLLLLF, MiniMax-01's order) — as the 2-layer FL learned recall in 2 of 3
seeds and LF in none (evals/KHOP_RESULTS.md). A quantization comparison of models that never
learned recall says nothing about recall. The MQAR runs follow configs/train/khop_mqar.yaml — its
model width, data, curriculum and optimizer — for `steps` steps, the curriculum's start steps and the warm-up scaled by steps / 1500.
The text runs follow configs/train/stdlib_lm.yaml (LLLF, d 128) for `text_steps`. A QAT twin is the
same config plus `quant: {qat: true, start_step: qat_start x steps}`: torchao fake quant from that
step on, so its final validation already measures the INT4 forward.

Each run is an `attnlab train` run dir `folder/<run>` made from a config written next to it
(`folder/<run>.yaml`, rerun by hand with `attnlab train --config`), reused when it finished with
the same config, resumed when it was interrupted, and refused when it finished with another config
(e.g. other --train-steps).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import yaml

# family -> layers: the k-hop MQAR setup's 2-layer models, and 7 lightning : 1 softmax, softmax first
FAMILIES = {"full": "FF", "lightning": "LL", "hybrid-7to1": "F" + "L" * 7}
TEXT = "text-lm"  # the local-corpus LM (configs/train/stdlib_lm.yaml's LLLF), for the loss comparison
KHOP_STEPS = 1500  # configs/train/khop_mqar.yaml's max_steps: the curriculum's time scale


@dataclass
class TrainSettings:
    steps: int = 2000  # MQAR runs
    qat_start: float = 0.5  # QAT twins: fake quant from this fraction of the steps
    hidden: int = 64
    heads: int = 2
    intermediate: int = 32
    val_examples: int = 256  # held-out rows per MQAR slice (khop_mqar.yaml's)
    text: bool = True  # also the local-corpus LM pair
    text_steps: int = 300
    text_hidden: int = 128
    text_max_chars: int = 1_000_000  # corpus characters read (300 steps x 16 x 256 bytes ~ 1.2 M)
    threads: int = 1  # torch threads per training process

    def qat_start_step(self, steps: int) -> int:
        return min(steps - 1, round(self.qat_start * steps))


@dataclass(frozen=True)
class RunSpec:
    """One training run of the benchmark."""

    name: str  # its folder under the models folder: "<family>" or "<family>-qat"
    family: str
    qat: bool

    @property
    def text(self) -> bool:
        return self.family == TEXT


def run_specs(families: list[str], text: bool) -> list[RunSpec]:
    names = [*families, *([TEXT] if text else [])]
    return [RunSpec(f"{f}-qat" if qat else f, f, qat) for f in names for qat in (False, True)]


def layout_of(family: str) -> str:
    return FAMILIES.get(family) or _base_config("stdlib_lm.yaml")["model"]["layers"]


def _base_config(name: str) -> dict:
    path = Path(str(resources.files("attnlab.configs").joinpath("train", name)))
    return yaml.safe_load(path.read_text())


def rows_drawn(starts: list[int], batch_sizes: list[int], steps: int) -> list[int]:
    """Training rows each mixture slice serves in `steps` steps: batches rotate round-robin over the
    slices active at each step (train/data.py's StepBatches.schedule), batch_size rows each."""
    served = [0] * len(starts)
    for step in range(steps):
        active = [k for k, start in enumerate(starts) if start <= step]
        served[active[step % len(active)]] += 1
    return [n * b for n, b in zip(served, batch_sizes, strict=True)]


def mqar_config(spec: RunSpec, settings: TrainSettings, run_dir: Path) -> dict:
    """configs/train/khop_mqar.yaml for this family, width and step count. Each slice generates
    only the training rows the run draws (at most khop_mqar.yaml's count): the same curriculum,
    without minutes of generating rows no step reads."""
    c = _base_config("khop_mqar.yaml")
    steps, scale = settings.steps, settings.steps / KHOP_STEPS
    layers = FAMILIES[spec.family]
    c["run_dir"] = str(run_dir)
    c["model"].update(
        layers=layers, num_hidden_layers=len(layers), hidden_size=settings.hidden,
        num_attention_heads=settings.heads, extra={"intermediate_size": settings.intermediate},
    )  # fmt: skip
    task = c["data"]["task"]
    task["val_examples"] = settings.val_examples
    mixture = task["mixture"]
    for entry in mixture:
        if entry.get("start_step"):
            entry["start_step"] = max(1, round(entry["start_step"] * scale))
    drawn = rows_drawn(
        [e.get("start_step", 0) for e in mixture],
        [e.get("batch_size", c["data"]["batch_size"]) for e in mixture],
        steps,
    )
    for entry, rows in zip(mixture, drawn, strict=True):
        batch = entry.get("batch_size", c["data"]["batch_size"])
        entry["train_examples"] = max(batch, min(entry["train_examples"], rows))
    c["optim"]["warmup_steps"] = max(1, round(c["optim"]["warmup_steps"] * scale))
    _trainer(c, steps, settings, spec)
    return c


def text_config(spec: RunSpec, settings: TrainSettings, run_dir: Path) -> dict:
    """configs/train/stdlib_lm.yaml, shortened to `text_steps` steps."""
    c = _base_config("stdlib_lm.yaml")
    steps = settings.text_steps
    c["run_dir"] = str(run_dir)
    c["model"]["hidden_size"] = settings.text_hidden
    c["data"]["text"]["max_chars"] = settings.text_max_chars
    c["optim"]["warmup_steps"] = max(1, steps // 10)
    _trainer(c, steps, settings, spec)
    return c


def _trainer(c: dict, steps: int, settings: TrainSettings, spec: RunSpec) -> None:
    c["trainer"].update(
        max_steps=steps, val_every=steps, checkpoint_every=max(1, steps // 4), log_every=max(1, steps // 20),
        progress_bar=False, threads=settings.threads,
    )  # fmt: skip
    if spec.qat:
        c["quant"] = {"qat": True, "start_step": settings.qat_start_step(steps)}


def run_config(spec: RunSpec, settings: TrainSettings, folder: Path) -> Path:
    """Write the run's config next to its run dir -> the file."""
    make = text_config if spec.text else mqar_config
    values = make(spec, settings, folder / spec.name)
    path = folder / f"{spec.name}.yaml"
    folder.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(values, sort_keys=False))
    return path


def run_state(config_path: Path) -> str:
    """'finished' (reuse), 'resume' (checkpoints of an unfinished run) or 'new'; ValueError for a run
    dir that finished with another config."""
    from ..train import config_hash, parse_args, read_result

    cfg, _ = parse_args(["--config", str(config_path)])
    run_dir = Path(cfg.run_dir)
    result = read_result(run_dir)
    if result and result.get("status") == "finished" and (run_dir / "hf" / "config.json").is_file():
        if result.get("config_hash") != config_hash(cfg):
            raise ValueError(
                f"{run_dir} holds a finished run of another config (other --train-steps or widths?); "
                "remove it or choose another --out"
            )
        return "finished"
    return "resume" if any((run_dir / "checkpoints").glob("*.ckpt")) else "new"


def quiet_model_io() -> None:
    """No transformers progress bar per model save or load ("Writing model shards", "Loading
    weights"): the benchmark prints its own progress lines. Called in every process it runs."""
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()


def train_run(config_path: Path, resume: bool) -> dict:
    """Train (or finish training) one run -> its result.json."""
    from ..train import parse_args, train

    quiet_model_io()

    cfg, _ = parse_args(["--config", str(config_path)])
    result = train(cfg, resume=resume)
    if result["status"] != "finished":
        raise RuntimeError(f"training {cfg.run_dir} stopped: {result.get('message')}")
    return result


def prepare_runs(
    folder: Path, specs: list[RunSpec], settings: TrainSettings, jobs: int = 1, say=print, every: float = 30.0
) -> dict[str, dict]:
    """Train the missing runs under `folder` (`jobs` at a time, each in its own process; progress
    every `every` seconds), reuse the finished ones -> {run name: record}."""
    configs = {s.name: run_config(s, settings, folder) for s in specs}
    states = {name: run_state(path) for name, path in configs.items()}
    todo = [s for s in specs if states[s.name] != "finished"]
    for s in specs:
        if states[s.name] == "finished":
            say(f"reusing {s.name} from {folder / s.name}")
    todo.sort(key=lambda s: (s.text, -len(layout_of(s.family)), s.qat))  # the longest first
    started = time.perf_counter()
    if todo:
        say(f"training {len(todo)} run(s), {min(jobs, len(todo))} at a time, in {folder}: "
            f"{', '.join(s.name for s in todo)}")  # fmt: skip
    if jobs > 1 and len(todo) > 1:
        _train_in_processes(folder, todo, configs, states, jobs, say, every)
    else:
        for s in todo:
            resuming = " (resuming)" if states[s.name] == "resume" else ""
            say(f"training {s.name} ({layout_of(s.family)}){resuming}")
            train_run(configs[s.name], states[s.name] == "resume")
            _say_done(folder, s.name, say)
    if todo:
        say(f"trained {len(todo)} run(s) in {time.perf_counter() - started:.0f} s")
    done = {s.name for s in todo}
    return {s.name: run_record(folder / s.name, s, trained_now=s.name in done) for s in specs}


def _train_in_processes(folder, todo, configs, states, jobs, say, every) -> None:
    """Each run in a spawned worker (a fresh torch), `jobs` at once; a line per finished run and,
    every `every` seconds, the step each running run has reached (from its metrics.jsonl)."""
    import multiprocessing
    from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait

    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=min(jobs, len(todo)), mp_context=context) as pool:
        futures = {pool.submit(train_run, configs[s.name], states[s.name] == "resume"): s for s in todo}
        pending = set(futures)
        while pending:
            finished, pending = wait(pending, timeout=every, return_when=FIRST_COMPLETED)
            for future in finished:
                future.result()  # a failed run stops the benchmark with its error
                _say_done(folder, futures[future].name, say)
            if pending and not finished:
                running = [  # the runs in a worker now, not those queued behind them
                    f"{s.name} step {last_step(folder / s.name)}" for f, s in futures.items() if f.running()
                ]
                say("  " + ", ".join(running))


def last_step(run_dir: Path) -> int:
    """The last training step logged in the run's metrics.jsonl (0 before the first row)."""
    path = run_dir / "metrics.jsonl"
    if not path.is_file():
        return 0
    lines = [line for line in path.read_text().splitlines() if line.strip()]
    return json.loads(lines[-1]).get("step", 0) if lines else 0


def _say_done(folder: Path, name: str, say) -> None:
    result = json.loads((folder / name / "result.json").read_text())
    say(f"trained {name}: val loss {result['val/loss']:.3f} in {result['wall_s']:.0f} s")


def run_record(run_dir: Path, spec: RunSpec, trained_now: bool) -> dict:
    """What the report says about a run: its family, layout, steps, QAT start, final validation."""
    config = yaml.safe_load((run_dir / "config.yaml").read_text())
    result = json.loads((run_dir / "result.json").read_text())
    quant = config.get("quant") or {}
    return {
        "path": str(run_dir),
        "family": spec.family,
        "qat": spec.qat,
        "layers": layout_of(spec.family),
        "hidden": config["model"]["hidden_size"],
        "steps": result["step"],
        "qat_start_step": quant.get("start_step") if spec.qat else None,
        "params": result.get("params"),
        "val_loss": result.get("val/loss"),
        "train_s": result.get("wall_s"),
        "trained_now": trained_now,
    }
