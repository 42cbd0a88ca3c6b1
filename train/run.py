"""One training run, start to end, in its run directory:

<run_dir>/config.yaml        the resolved config (every default filled in)
<run_dir>/metrics.jsonl      train loss/acc/lr/tokens-per-s every log_every steps, val rows
<run_dir>/logs/version_N/    Lightning CSV logs (and TensorBoard when installed)
<run_dir>/checkpoints/       last.ckpt + the newest keep_checkpoints periodic ones
<run_dir>/tokenizer/         the trained BPE (data.text.tokenizer: bpe), reused on resume
<run_dir>/hf/                save_pretrained export (+ tokenizer) for probes, evals, serve; after
                             QAT a plain attnlab model with its scheme in config.attnlab_quant
<run_dir>/result.json        status, final metrics, params, state bytes, FLOPs/token, the kernels
                             used — written last, so its presence with status "finished" marks a
                             finished run

`train()` reads as its steps: check the run dir (and pick the checkpoint to resume), set up the
process, then under the run's kernel choice build data, module and trainer (run_setup.py), fit,
and write the result.
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from pathlib import Path

import lightning as L
import torch
from lightning.pytorch.utilities.exceptions import SIGTERMException

from ..kernels import backends_used, kernel_choice, kernel_record
from ..quant import strip_fake_quant
from .callbacks import MetricsLog
from .checkpoints import StopOnSignal, resume_checkpoint
from .config import TrainConfig, dump_config, load_config
from .data import DataTensors, TrainData, build_data
from .metrics import flops_per_token, parameter_counts
from .module import CausalLMModule
from .progress import quiet_lightning
from .run_files import EXECUTION_ONLY, config_hash, read_result, write_json  # noqa: F401  (re-exported)
from .run_setup import (  # noqa: F401  (re-exported)
    build_module,
    build_trainer,
    checkpoint_callback,
    eval_spec,
    quant_callbacks,
)


def train(cfg: TrainConfig, resume: bool = False, callbacks: Sequence[L.Callback] = ()) -> dict:
    """Run (or, with resume, continue) one training run; returns the contents of result.json."""
    started = time.perf_counter()
    run_dir = Path(cfg.run_dir)
    ckpt_dir = run_dir / "checkpoints"
    refuse_to_overwrite(run_dir, ckpt_dir, resume)
    previous = read_result(run_dir) if resume else None
    if previous and previous.get("status") == "finished" and previous.get("config_hash") == config_hash(cfg):
        return {**previous, "message": "already finished; nothing to resume"}  # nothing touched
    ckpt_path = checkpoint_to_resume(run_dir, ckpt_dir) if resume else None
    run_dir.mkdir(parents=True, exist_ok=True)
    if not resume:
        (run_dir / "config.yaml").write_text(dump_config(cfg))
    set_up_process(cfg, run_dir)

    choice = cfg.kernel_choice()
    with kernel_choice(choice):  # the whole run, validation and the final export included
        backends_used(reset=True)
        data = build_data(cfg.data, run_dir, cfg.seed)
        module = build_module(cfg, data)
        log = MetricsLog(run_dir / "metrics.jsonl", cfg.trainer.log_every)
        stop = StopOnSignal(ckpt_dir / "last.ckpt")
        run_callbacks = [
            RunStarted(run_dir, cfg),
            checkpoint_callback(cfg, ckpt_dir),
            log,
            stop,
            *quant_callbacks(cfg),
            *callbacks,
        ]
        trainer = build_trainer(cfg, run_dir, run_callbacks)
        datamodule = TrainData(data, cfg.seed)
        fit(trainer, module, datamodule, ckpt_path, stop)
        result = run_result(cfg, trainer, module, data, log, stop, ckpt_path)
        if result["status"] == "finished":
            finish(trainer, module, datamodule, data, run_dir, result)
        result["kernels"] = kernel_record()  # the choice in force (this run's) and what ran
    result["wall_s"] = time.perf_counter() - started
    if trainer.is_global_zero:
        write_json(run_dir / "result.json", result)
    return result


def refuse_to_overwrite(run_dir: Path, ckpt_dir: Path, resume: bool) -> None:
    """A new run never starts over another run's checkpoints."""
    if not resume and ckpt_dir.exists() and any(ckpt_dir.glob("*.ckpt")):
        raise ValueError(
            f"run_dir {str(run_dir)!r} already holds checkpoints; pass --resume to continue that run, "
            f"or choose another run_dir"
        )


def checkpoint_to_resume(run_dir: Path, ckpt_dir: Path) -> str | None:
    """The newest checkpoint that loads, chosen before anything in the run dir changes."""
    ckpt_path, skipped = resume_checkpoint(ckpt_dir)
    if skipped and ckpt_path is None:
        raise ValueError(
            f"no checkpoint in {ckpt_dir} loads ({'; '.join(skipped)}); nothing in {run_dir} was changed"
        )
    for problem in skipped:
        print(f"attnlab train: skipping unreadable checkpoint {problem}", flush=True)
    if skipped:
        print(f"attnlab train: resuming from {ckpt_path.name}", flush=True)
    return str(ckpt_path) if ckpt_path else None


def set_up_process(cfg: TrainConfig, run_dir: Path) -> None:
    """Process-wide settings of the run: quiet Lightning, threads, inductor cache, seeds."""
    t = cfg.trainer
    quiet_lightning()
    if t.threads:
        torch.set_num_threads(t.threads)
    if t.compile:
        # Not setdefault: inductor writes its default into this variable the first time anything asks
        # for its cache dir, so "already set" does not mean the user chose it.
        os.environ["TORCHINDUCTOR_CACHE_DIR"] = str(run_dir.resolve() / ".inductor")
    L.seed_everything(cfg.seed, verbose=False)


def fit(trainer: L.Trainer, module, datamodule, ckpt_path: str | None, stop: StopOnSignal) -> None:
    try:
        trainer.fit(module, datamodule=datamodule, ckpt_path=ckpt_path)
    except SIGTERMException:  # Lightning's way out after SIGTERM (a SystemExit with status 0)
        stop.save_if_missed(trainer)


def run_status(cfg: TrainConfig, trainer: L.Trainer, module: CausalLMModule, stop: StopOnSignal):
    """-> (status, message): "finished" at max_steps, "stopped" by a guard, else "interrupted"."""
    if module.stop_reason:
        status = "stopped"
    elif trainer.global_step >= cfg.trainer.max_steps:
        status = "finished"
    else:
        status = "interrupted"
    message = module.stop_reason or (
        f"{stop.reason} at step {trainer.global_step}" if status == "interrupted" and stop.reason else None
    )
    return status, message


def run_result(
    cfg: TrainConfig,
    trainer: L.Trainer,
    module: CausalLMModule,
    data: DataTensors,
    log: MetricsLog,
    stop: StopOnSignal,
    ckpt_path: str | None,
) -> dict:
    """What result.json says about any run, finished or not (the final metrics come in `finish`)."""
    status, message = run_status(cfg, trainer, module, stop)
    model = module.model
    return {
        "status": status,
        "message": message,
        "step": trainer.global_step,
        "resumed_from": ckpt_path,
        "strategy": type(trainer.strategy).__name__,
        "world_size": trainer.world_size,
        "config_hash": config_hash(cfg),
        **parameter_counts(model),
        "state_bytes": model.state_bytes(data.seq_len),
        **(
            {f"state_bytes@{s.name}": model.state_bytes(s.seq_len) for s in data.slices}
            if len(data.slices) > 1
            else {}
        ),
        "eval_len": data.seq_len,
        "flops_per_token": flops_per_token(model, data.seq_len),
        "tokens_per_s": log.mean_tokens_per_s(),
    }


def finish(trainer: L.Trainer, module, datamodule, data: DataTensors, run_dir: Path, result: dict) -> None:
    """A finished run: the final checkpoint, a final validation (with the eval suite) into `result`,
    and the save_pretrained export in <run_dir>/hf (a QAT model's fake-quantized Linear modules
    turned back into nn.Linear with the same latent weights first, so it loads without torchao)."""
    trainer.save_checkpoint(
        run_dir / "checkpoints" / "last.ckpt"
    )  # the final step, even when max_steps % checkpoint_every != 0
    trainer.validate(module, datamodule=datamodule, verbose=False)
    result.update({k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("val/")})
    result.update(module.suite_metrics)  # the final validation always runs the suite
    if trainer.is_global_zero:
        strip_fake_quant(module.model)
        module.model.save_pretrained(run_dir / "hf")
        if data.tokenizer is not None:
            data.tokenizer.save_pretrained(run_dir / "hf")


class RunStarted(L.Callback):
    """When training has actually started (a resumed checkpoint restored): the run is no longer
    finished, and config.yaml says what this attempt runs. Until then a failed resume changes
    nothing in the run dir."""

    def __init__(self, run_dir: Path, cfg: TrainConfig):
        self.run_dir, self.cfg = run_dir, cfg

    def on_train_start(self, trainer, pl_module) -> None:
        if trainer.is_global_zero:
            (self.run_dir / "result.json").unlink(missing_ok=True)
            write_text(self.run_dir / "config.yaml", dump_config(self.cfg))


def write_text(path: Path, text: str) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(text)
    tmp.replace(path)


def train_from_file(config_path: str, resume: bool = True) -> dict:
    """Entry point for sweep executors (subprocesses, submitit): the run's own config.yaml."""
    return train(load_config(config_path), resume=resume)
