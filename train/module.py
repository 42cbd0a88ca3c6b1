"""The LightningModule around AttnLabForCausalLM: AdamW + scheduled lr, loss (MoE aux loss included
by the model), answer accuracy, perplexity, the non-finite loss guard, and the eval suite as part
of validation (config `eval:`)."""

from __future__ import annotations

import math

import lightning as L
import torch
import torch.nn.functional as F
from lightning.pytorch.trainer.states import TrainerFn
from torch.optim.lr_scheduler import LambdaLR

from ..archs import AttnLabConfig, AttnLabForCausalLM
from .config import OptimSection
from .metrics import answer_accuracy
from .schedule import lr_factor


class CausalLMModule(L.LightningModule):
    def __init__(
        self,
        model_config: dict,
        optim: dict,
        max_steps: int,
        val_names: list[str] | None = None,
        eval_spec=None,  # evals.SuiteSpec: run the suite during validation
        eval_every: int = 1,
    ):
        super().__init__()
        self.save_hyperparameters(ignore=["eval_spec"])
        self.model = AttnLabForCausalLM(AttnLabConfig(**model_config))
        self.optim = OptimSection(**optim)
        self.max_steps = max_steps
        self.val_names = val_names or ["val"]  # one per validation dataloader (data slice)
        self.stop_reason: str | None = None  # set when the run must stop; then nothing more is saved
        self.eval_spec, self.eval_every = eval_spec, eval_every
        self.eval_tokenizer = None  # the data's tokenizer (train() sets it); None for token tasks
        self.validations = 0
        self.suite_metrics: dict[str, float] = {}  # the suite's scores at this validation, if it ran

    def forward(self, batch: dict):
        return self.model(input_ids=batch["input_ids"], labels=batch["labels"], use_cache=False)

    def training_step(self, batch: dict, batch_idx: int):
        out = self(batch)
        finite = bool(torch.isfinite(out.loss))
        # Every rank takes the same decision, so DDP never waits on a backward that one rank skipped.
        if not self.trainer.strategy.reduce_boolean_decision(finite, all=True):
            self.stop(f"non-finite loss ({out.loss.item()}) at step {self.global_step}")
            return None  # no backward, no parameter update: the weights stay the last good ones
        size = len(batch["input_ids"])
        self.log("train/loss", out.loss, prog_bar=True, batch_size=size)
        self.log("train/acc", answer_accuracy(out.logits, batch["labels"]), batch_size=size)
        if self.model.config.ffn == "moe":
            self.log("train/aux_loss", out.aux_loss, batch_size=size)
        self.log("lr", self.trainer.optimizers[0].param_groups[0]["lr"], batch_size=size)
        return out.loss

    def on_before_optimizer_step(self, optimizer) -> None:
        # A finite loss can still give inf/nan gradients; dropping them makes AdamW skip every
        # parameter (no update, no weight decay), so the weights stay good.
        grads = [p.grad for p in self.parameters() if p.grad is not None]
        if grads and not torch.isfinite(torch.stack([g.norm() for g in grads]).sum()):
            optimizer.zero_grad(set_to_none=True)
            self.stop(f"non-finite gradient at step {self.global_step}")

    def stop(self, reason: str) -> None:
        self.stop_reason = reason
        self.trainer.should_stop = True

    def on_validation_epoch_start(self) -> None:
        # Exact pooled metrics: sums over answer tokens, not means of batch means.
        self.val_sums = torch.zeros(len(self.val_names), 3, dtype=torch.float64)  # [slice, (nll, hits, n)]
        self.suite_metrics = {}

    def validation_step(self, batch: dict, batch_idx: int, dataloader_idx: int = 0) -> None:
        logits = (
            self.model(input_ids=batch["input_ids"], use_cache=False).logits[:, :-1].float()
        )  # [B, T-1, V]
        target = batch["labels"][:, 1:]
        mask = target != -100
        nll = F.cross_entropy(logits.flatten(0, 1), target.flatten(), ignore_index=-100, reduction="sum")
        hits = ((logits.argmax(-1) == target) & mask).sum()
        self.val_sums[dataloader_idx] += torch.stack([nll.detach(), hits, mask.sum()]).double().cpu()

    def on_validation_epoch_end(self) -> None:
        metrics = summarize(self.val_sums.sum(0), "")
        if len(self.val_names) > 1:
            for name, sums in zip(self.val_names, self.val_sums, strict=True):
                metrics.update(summarize(sums, f"@{name}"))
        if self.eval_spec is not None and self.suite_due():
            from ..evals import evaluate_suite

            self.suite_metrics = evaluate_suite(self.model, self.eval_tokenizer, self.eval_spec)
            metrics.update(self.suite_metrics)
        self.log_dict(metrics, add_dataloader_idx=False)

    def suite_due(self) -> bool:
        """Every `eval_every`-th validation while fitting, and the final validation."""
        if self.trainer.state.fn != TrainerFn.FITTING:
            return True
        self.validations += 1
        return self.validations % self.eval_every == 0

    def configure_optimizers(self):
        o = self.optim
        # Decay matrices (projections, embeddings); not norms, biases, sinks.
        decay = [p for p in self.parameters() if p.requires_grad and p.ndim >= 2]
        no_decay = [p for p in self.parameters() if p.requires_grad and p.ndim < 2]
        groups = [
            {"params": decay, "weight_decay": o.weight_decay},
            {"params": no_decay, "weight_decay": 0.0},
        ]
        opt = torch.optim.AdamW(groups, lr=o.lr, betas=(o.beta1, o.beta2), eps=o.eps)
        sched = LambdaLR(opt, lambda step: lr_factor(step, o, self.max_steps))
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}


def summarize(sums: torch.Tensor, suffix: str) -> dict[str, float]:
    nll, hits, n = sums.tolist()
    loss = nll / max(n, 1)
    return {
        f"val/loss{suffix}": loss,
        f"val/acc{suffix}": hits / max(n, 1),
        f"val/ppl{suffix}": math.exp(min(loss, 50.0)),
    }
