"""One training run, start to end, in its run directory:

<run_dir>/config.yaml        the resolved config (every default filled in)
<run_dir>/metrics.jsonl      train loss/acc/lr/tokens-per-s every log_every steps, val rows
<run_dir>/logs/version_N/    Lightning CSV logs (and TensorBoard when installed)
<run_dir>/checkpoints/       last.ckpt + the newest keep_checkpoints periodic ones
<run_dir>/tokenizer/         the trained BPE (data.text.tokenizer: bpe), reused on resume
<run_dir>/hf/                save_pretrained export (+ tokenizer) for probes, evals, serve
<run_dir>/result.json        status, final metrics, params, state bytes, FLOPs/token — written
                             last, so its presence with status "finished" marks a finished run
"""

from __future__ import annotations

import dataclasses
import importlib.util
import os
import signal
import time
from collections.abc import Sequence
from pathlib import Path

import lightning as L
import torch
from lightning.pytorch.loggers import CSVLogger
from lightning.pytorch.utilities.exceptions import SIGTERMException

from ..evals.mqar import training_options
from .callbacks import GuardedCheckpoint, MetricsLog
from .checkpoints import StopOnSignal, resume_checkpoint
from .config import TrainConfig, dump_config, load_config
from .data import TrainData, build_data
from .metrics import flops_per_token, parameter_counts
from .module import CausalLMModule
from .progress import StepProgressBar, quiet_lightning
from .run_files import EXECUTION_ONLY, config_hash, read_result, write_json  # noqa: F401  (re-exported)


def train(cfg: TrainConfig, resume: bool = False, callbacks: Sequence[L.Callback] = ()) -> dict:
    """Run (or, with resume, continue) one training run; returns the contents of result.json."""
    started = time.perf_counter()
    run_dir = Path(cfg.run_dir)
    ckpt_dir = run_dir / "checkpoints"
    last = ckpt_dir / "last.ckpt"
    if not resume and ckpt_dir.exists() and any(ckpt_dir.glob("*.ckpt")):
        raise ValueError(
            f"run_dir {str(run_dir)!r} already holds checkpoints; pass --resume to continue that run, "
            f"or choose another run_dir"
        )
    previous = read_result(run_dir) if resume else None
    if previous and previous.get("status") == "finished" and previous.get("config_hash") == config_hash(cfg):
        return {**previous, "message": "already finished; nothing to resume"}  # nothing touched
    ckpt_path = None
    if resume:  # the newest checkpoint that loads, before anything in the run dir changes
        ckpt_path, skipped = resume_checkpoint(ckpt_dir)
        if skipped and ckpt_path is None:
            raise ValueError(
                f"no checkpoint in {ckpt_dir} loads ({'; '.join(skipped)}); nothing in {run_dir} was changed"
            )
        for problem in skipped:
            print(f"attnlab train: skipping unreadable checkpoint {problem}", flush=True)
        if skipped:
            print(f"attnlab train: resuming from {ckpt_path.name}", flush=True)
    run_dir.mkdir(parents=True, exist_ok=True)
    if not resume:
        (run_dir / "config.yaml").write_text(dump_config(cfg))

    t = cfg.trainer
    quiet_lightning()
    if t.threads:
        torch.set_num_threads(t.threads)
    if t.compile:
        # Not setdefault: inductor writes its default into this variable the first time anything asks
        # for its cache dir, so "already set" does not mean the user chose it.
        os.environ["TORCHINDUCTOR_CACHE_DIR"] = str(run_dir.resolve() / ".inductor")
    L.seed_everything(cfg.seed, verbose=False)

    data = build_data(cfg.data, run_dir, cfg.seed)
    model_kwargs = cfg.model.hf_kwargs(data.vocab_size)
    if model_kwargs["vocab_size"] < data.vocab_size:
        raise ValueError(
            f"model.vocab_size = {model_kwargs['vocab_size']} is smaller than the data's vocabulary "
            f"({data.vocab_size}); leave it unset to use the data's"
        )
    module = CausalLMModule(
        model_kwargs,
        dataclasses.asdict(cfg.optim),
        t.max_steps,
        [s.name for s in data.slices],
        eval_spec=eval_spec(cfg),
        eval_every=cfg.eval.every,
    )
    module.eval_tokenizer = data.tokenizer
    if t.compile:
        module.model.compile()  # in place: state_dict keys (and checkpoints) stay the same

    log = MetricsLog(run_dir / "metrics.jsonl", t.log_every)
    checkpoints = GuardedCheckpoint(
        dirpath=ckpt_dir,
        filename="step-{step:.0f}",
        auto_insert_metric_name=False,
        monitor="step",  # ModelCheckpoint's own global_step candidate: top-k by step = the newest k
        mode="max",
        save_top_k=t.keep_checkpoints,
        every_n_train_steps=t.checkpoint_every,
        save_last=True,
    )
    stop = StopOnSignal(last)
    loggers = [CSVLogger(run_dir, name="logs")]
    if importlib.util.find_spec("tensorboard"):
        from lightning.pytorch.loggers import TensorBoardLogger

        loggers.append(TensorBoardLogger(run_dir, name="tensorboard"))
    trainer = L.Trainer(
        default_root_dir=run_dir,
        max_steps=t.max_steps,
        max_epochs=-1,
        accumulate_grad_batches=t.accumulate_grad_batches,
        precision=t.precision,
        gradient_clip_val=cfg.optim.grad_clip or None,
        val_check_interval=t.val_every * t.accumulate_grad_batches,
        check_val_every_n_epoch=None,
        num_sanity_val_steps=0,
        log_every_n_steps=t.log_every,
        logger=loggers,
        callbacks=[RunStarted(run_dir, cfg), checkpoints, log, stop, *callbacks]
        + ([StepProgressBar(refresh_rate=max(1, t.log_every))] if t.progress_bar else []),
        enable_progress_bar=t.progress_bar,
        enable_model_summary=False,
        accelerator=t.accelerator,
        devices=t.devices,
        strategy=t.strategy,
        num_nodes=t.num_nodes,
        use_distributed_sampler=False,  # StepSampler splits batches across ranks itself
    )
    datamodule = TrainData(data, cfg.seed)
    ckpt_path = str(ckpt_path) if ckpt_path else None
    try:
        trainer.fit(module, datamodule=datamodule, ckpt_path=ckpt_path)
    except SIGTERMException:  # Lightning's way out after SIGTERM (a SystemExit with status 0)
        stop.signal = stop.signal or signal.SIGTERM

    if module.stop_reason:
        status = "stopped"
    elif trainer.global_step >= t.max_steps:
        status = "finished"
    else:
        status = "interrupted"
    message = module.stop_reason or (
        f"{stop.reason} at step {trainer.global_step}" if status == "interrupted" and stop.reason else None
    )
    model = module.model
    result = {
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
    if status == "finished":
        trainer.save_checkpoint(last)  # the final step, even when max_steps % checkpoint_every != 0
        trainer.validate(module, datamodule=datamodule, verbose=False)
        result.update({k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("val/")})
        result.update(module.suite_metrics)  # the final validation always runs the suite
        if trainer.is_global_zero:
            model.save_pretrained(run_dir / "hf")
            if data.tokenizer is not None:
                data.tokenizer.save_pretrained(run_dir / "hf")
    result["wall_s"] = time.perf_counter() - started
    if trainer.is_global_zero:
        write_json(run_dir / "result.json", result)
    return result


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


def eval_spec(cfg: TrainConfig):
    """The `eval:` section as a SuiteSpec (None when off); a run on MQAR evaluates MQAR samples made
    the way its training data was (power_a, random_non_queries, separator)."""
    if cfg.eval.suite is None:
        return None
    return cfg.eval.spec(training_options(dataclasses.asdict(cfg.data)))


def train_from_file(config_path: str, resume: bool = True) -> dict:
    """Entry point for sweep executors (subprocesses, submitit): the run's own config.yaml."""
    return train(load_config(config_path), resume=resume)
