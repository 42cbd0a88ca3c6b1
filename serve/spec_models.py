"""The speculative-decoding benchmark's models (serve/spec_bench.py): a 4-layer target per family
and a 1-layer draft per layer letter, all byte-level LMs trained on the same data — the local
corpus of Python standard-library code (configs/train/stdlib_lm.yaml) — for the same steps.

Each is an `attnlab train` run dir under the models folder (`target-full`, `draft-L`, ...), reused
when its export (`hf/`) is there, resumed when it was interrupted.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import yaml

# family -> (target layout, draft layout). The hybrid (3 lightning : 1 full, Qwen3-Next's ratio) has
# no 1-layer version of itself: its draft is the lightning one, the letter of 3 of its 4 layers.
FAMILIES = {"full": ("FFFF", "F"), "lightning": ("LLLL", "L"), "hybrid": ("LLLF", "L")}


@dataclass
class TrainSettings:
    steps: int = 300
    hidden: int = 128
    heads: int = 4
    seq_len: int = 512
    batch_size: int = 8
    lr: float = 2e-3
    max_chars: int = 4_000_000  # corpus characters the runs read; the files past them are held out
    threads: int | None = None
    progress: bool = True


def model_names(families: list[str]) -> dict[str, str]:
    """-> {run name: layout} of every model the families need (drafts shared between families)."""
    names = {}
    for family in families:
        target, draft = FAMILIES[family]
        names[f"target-{family}"] = target
        names[f"draft-{draft}"] = draft
    return names


def draft_name(family: str) -> str:
    return f"draft-{FAMILIES[family][1]}"


def train_model(run_dir: Path, layout: str, settings: TrainSettings) -> None:
    """Train (or finish training) one byte-level LM on the local corpus in `run_dir`."""
    from importlib import resources

    from ..train import parse_args, train

    config = Path(str(resources.files("attnlab.configs").joinpath("train", "stdlib_lm.yaml")))
    s = settings
    words = [
        "--config", str(config), "--run_dir", str(run_dir), "--seed", "0",
        "--model.layers", layout, "--model.num_hidden_layers", str(len(layout)),
        "--model.hidden_size", str(s.hidden), "--model.num_attention_heads", str(s.heads),
        "--data.text.tokenizer", "byte", "--data.text.seq_len", str(s.seq_len),
        "--data.text.max_chars", str(s.max_chars), "--data.batch_size", str(s.batch_size),
        "--optim.lr", str(s.lr), "--optim.warmup_steps", str(max(1, s.steps // 10)),
        "--trainer.max_steps", str(s.steps), "--trainer.val_every", str(s.steps),
        "--trainer.checkpoint_every", str(s.steps), "--trainer.log_every", str(max(1, min(25, s.steps // 4))),
        "--trainer.progress_bar", str(s.progress).lower(),
    ]  # fmt: skip
    if s.threads:
        words += ["--trainer.threads", str(s.threads)]
    cfg, _ = parse_args(words)
    resume = any((run_dir / "checkpoints").glob("*.ckpt"))
    result = train(cfg, resume=resume)
    if result["status"] != "finished":
        raise RuntimeError(f"training {run_dir.name} stopped: {result.get('message')}")


def prepare_models(
    folder: Path, families: list[str], settings: TrainSettings, jobs: int = 1, say=print
) -> dict:
    """Train the missing models under `folder` (`jobs` at a time, each in its own process), reuse
    the others -> {name: record}."""
    names = model_names(families)
    missing = [n for n in names if not (folder / n / "hf" / "config.json").exists()]
    for name in names:
        if name not in missing:
            say(f"reusing {name} from {folder / name}")
    missing.sort(key=lambda n: -len(names[n]))  # the deepest first: the jobs end closer together
    if jobs > 1 and len(missing) > 1:
        _train_in_processes(folder, {n: names[n] for n in missing}, settings, jobs, say)
    for name in missing if jobs == 1 or len(missing) == 1 else []:
        say(f"training {name} ({names[name]}, {settings.steps} steps) in {folder / name}")
        train_model(folder / name, names[name], settings)
    records = {}
    for name, layout in names.items():
        records[name] = model_record(folder / name, layout)
        records[name]["trained_now"] = name in missing
    return records


def _train_in_processes(
    folder: Path, layouts: dict[str, str], settings: TrainSettings, jobs: int, say
) -> None:
    """Each model in a worker process (spawned: a fresh torch), `jobs` at once; one line per model
    when it is done instead of interleaved progress bars."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor, as_completed
    from dataclasses import replace

    quiet = replace(settings, progress=False)
    context = multiprocessing.get_context("spawn")
    say(f"training {', '.join(layouts)} ({settings.steps} steps each), {jobs} at a time, in {folder}")
    with ProcessPoolExecutor(max_workers=min(jobs, len(layouts)), mp_context=context) as pool:
        futures = {pool.submit(train_model, folder / n, layout, quiet): n for n, layout in layouts.items()}
        for future in as_completed(futures):
            future.result()
            r = model_record(folder / futures[future], layouts[futures[future]])
            say(f"trained {futures[future]}: val loss {r['val_loss']:.3f} in {r['train_s']:.0f} s")


def model_record(run_dir: Path, layout: str) -> dict:
    """What the report says about a trained model: its layout, size, steps and final losses."""
    config_path = run_dir / "config.yaml"
    if not config_path.is_file():
        raise ValueError(f"{run_dir}: no config.yaml; expected a run dir of `attnlab train`")
    config = yaml.safe_load(config_path.read_text())
    hf = json.loads((run_dir / "hf" / "config.json").read_text())
    result_path = run_dir / "result.json"
    result = json.loads(result_path.read_text()) if result_path.is_file() else {}
    layers = hf.get("layers")
    found = layers if isinstance(layers, str) else None
    if found is not None and found != layout:
        raise ValueError(f"{run_dir}: has layers {found!r}, the benchmark's {run_dir.name} needs {layout!r}")
    if hf.get("vocab_size") != 256:
        raise ValueError(
            f"{run_dir}: vocabulary of {hf.get('vocab_size')}; the benchmark needs the byte one (256)"
        )
    train_loss = None
    metrics = run_dir / "metrics.jsonl"
    if metrics.is_file():
        rows = [json.loads(line) for line in metrics.read_text().splitlines() if line.strip()]
        train_loss = next((r["train/loss"] for r in reversed(rows) if "train/loss" in r), None)
    data = config.get("data") or {}
    text = data.get("text") or {}
    return {
        "path": str(run_dir),
        "layers": layout,
        "hidden": hf.get("hidden_size"),
        "params": result.get("params"),
        "steps": result.get("step", (config.get("trainer") or {}).get("max_steps")),
        "train_loss": train_loss,
        "val_loss": result.get("val/loss"),
        "train_s": result.get("wall_s"),
        "corpus": {
            "seed": config.get("seed", 0),
            "max_chars": text.get("max_chars"),
            "files": text.get("files") or [],
        },
    }
