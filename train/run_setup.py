"""The Lightning objects of one run, built from its config: the module (model + optimiser), the
callbacks that write the run dir, the loggers, and the Trainer. run.py's `train()` wires them."""

from __future__ import annotations

import dataclasses
import importlib.util
from collections.abc import Sequence
from pathlib import Path

import lightning as L
from lightning.pytorch.loggers import CSVLogger

from ..evals import mqar_training_options as training_options
from ..quant import prepare_qat, quant_field
from .callbacks import FakeQuantSchedule, GuardedCheckpoint
from .config import TrainConfig
from .data import DataTensors
from .module import CausalLMModule
from .progress import StepProgressBar


def build_module(cfg: TrainConfig, data: DataTensors) -> CausalLMModule:
    """The LightningModule for this data (the model's vocabulary defaults to the data's)."""
    model_kwargs = cfg.model.hf_kwargs(data.vocab_size)
    if model_kwargs["vocab_size"] < data.vocab_size:
        raise ValueError(
            f"model.vocab_size = {model_kwargs['vocab_size']} is smaller than the data's vocabulary "
            f"({data.vocab_size}); leave it unset to use the data's"
        )
    module = CausalLMModule(
        model_kwargs,
        dataclasses.asdict(cfg.optim),
        cfg.trainer.max_steps,
        [s.name for s in data.slices],
        eval_spec=eval_spec(cfg),
        eval_every=cfg.eval.every,
    )
    module.eval_tokenizer = data.tokenizer
    if cfg.quant is not None:
        apply_quant(module.model, cfg)
    if cfg.trainer.compile:
        module.model.compile()  # in place: state_dict keys (and checkpoints) stay the same
    return module


def apply_quant(model, cfg: TrainConfig) -> None:
    """The `quant:` section on a fresh model: with `qat`, torchao's fake quant on the selected
    nn.Linear modules (same Parameters, so checkpoints keep plain Linear keys); the scheme recorded
    as config.attnlab_quant either way."""
    if cfg.quant.qat:
        prepare_qat(model, cfg.quant, quant_field)
    else:
        model.config.attnlab_quant = cfg.quant.to_dict()


def quant_callbacks(cfg: TrainConfig) -> list[L.Callback]:
    """QAT's switch (fake quant from quant.start_step), when the run does QAT."""
    return [FakeQuantSchedule(cfg.quant.start_step)] if cfg.quant is not None and cfg.quant.qat else []


def eval_spec(cfg: TrainConfig):
    """The `eval:` section as a SuiteSpec (None when off); a run on MQAR evaluates MQAR samples made
    the way its training data was (power_a, random_non_queries, separator)."""
    if cfg.eval.suite is None:
        return None
    return cfg.eval.spec(training_options(dataclasses.asdict(cfg.data)))


def checkpoint_callback(cfg: TrainConfig, ckpt_dir: Path) -> GuardedCheckpoint:
    """last.ckpt always, plus the newest `keep_checkpoints` periodic ones."""
    t = cfg.trainer
    return GuardedCheckpoint(
        dirpath=ckpt_dir,
        filename="step-{step:.0f}",
        auto_insert_metric_name=False,
        monitor="step",  # ModelCheckpoint's own global_step candidate: top-k by step = the newest k
        mode="max",
        save_top_k=t.keep_checkpoints,
        every_n_train_steps=t.checkpoint_every,
        save_last=True,
    )


def loggers(run_dir: Path) -> list:
    """CSV logs always; TensorBoard too when it is installed."""
    out = [CSVLogger(run_dir, name="logs")]
    if importlib.util.find_spec("tensorboard"):
        from lightning.pytorch.loggers import TensorBoardLogger

        out.append(TensorBoardLogger(run_dir, name="tensorboard"))
    return out


def build_trainer(cfg: TrainConfig, run_dir: Path, callbacks: Sequence[L.Callback]) -> L.Trainer:
    """The Trainer for the `trainer:` section (its strategy, devices and nodes go to Lightning
    unchanged), stepping by optimizer steps, validating every `val_every` of them."""
    t = cfg.trainer
    return L.Trainer(
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
        logger=loggers(run_dir),
        callbacks=[*callbacks]
        + ([StepProgressBar(refresh_rate=max(1, t.log_every))] if t.progress_bar else []),
        enable_progress_bar=t.progress_bar,
        enable_model_summary=False,
        accelerator=t.accelerator,
        devices=t.devices,
        strategy=t.strategy,
        num_nodes=t.num_nodes,
        use_distributed_sampler=False,  # StepSampler splits batches across ranks itself
    )
