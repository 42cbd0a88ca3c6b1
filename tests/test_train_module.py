"""Trainer pieces against hand computations: the lr schedules, FLOPs per token, answer accuracy, and
gradient accumulation counting optimizer steps (not batches)."""

from __future__ import annotations

import json
import math

import lightning as L
import pytest
import torch
from train_helpers import tiny_run

from attnlab import AttnLabConfig, AttnLabForCausalLM
from attnlab.train.config import OptimSection, config_from_dict
from attnlab.train.metrics import answer_accuracy, flops_per_token
from attnlab.train.run import train
from attnlab.train.schedule import lr_factor


def test_warmup_then_cosine_reaches_the_floor_at_max_steps():
    o = OptimSection(schedule="cosine", warmup_steps=10, min_lr_ratio=0.1)
    assert lr_factor(0, o, 110) == pytest.approx(0.1) and lr_factor(9, o, 110) == pytest.approx(1.0)
    assert lr_factor(60, o, 110) == pytest.approx(0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * 0.5)))
    assert lr_factor(110, o, 110) == pytest.approx(0.1)


def test_wsd_is_flat_then_decays_linearly_over_the_last_fraction():
    o = OptimSection(schedule="wsd", warmup_steps=10, min_lr_ratio=0.0, decay_fraction=0.2)
    assert lr_factor(50, o, 100) == 1.0 and lr_factor(79, o, 100) == 1.0
    assert lr_factor(90, o, 100) == pytest.approx(0.5) and lr_factor(100, o, 100) == pytest.approx(0.0)


def test_flops_per_token_full_grows_with_length_lightning_does_not():
    def model(layers):
        return AttnLabForCausalLM(
            AttnLabConfig(
                vocab_size=32, hidden_size=32, num_hidden_layers=2, num_attention_heads=2, layers=layers
            )
        )

    full, light = model("F"), model("L")
    # full: 3 x layers x 2*H*(Dk + Dv) per attended key; a causal sequence of T attends (T+1)/2 on average
    per_key = 3 * 2 * 2 * 2 * (16 + 16)
    assert flops_per_token(full, 65) - flops_per_token(full, 1) == pytest.approx(per_key * (33 - 1))
    assert flops_per_token(light, 65) == flops_per_token(light, 1)
    linear = sum(m.weight.numel() for m in light.modules() if isinstance(m, torch.nn.Linear))
    assert flops_per_token(light, 1) == pytest.approx(3 * (2 * linear + 2 * 4 * 2 * 16 * 16))


def test_answer_accuracy_counts_only_labelled_positions():
    logits = torch.zeros(1, 4, 5)
    logits[0, 0, 3] = logits[0, 2, 1] = 1.0  # predicts 3 after position 0, 1 after position 2
    labels = torch.tensor([[-100, 3, -100, 4]])  # answers at 1 (right) and 3 (wrong)
    assert answer_accuracy(logits, labels).item() == 0.5


class CountBatches(L.Callback):
    def __init__(self):
        self.batches = 0

    def on_train_batch_end(self, *args):
        self.batches += 1


def test_gradient_accumulation_counts_optimizer_steps(tmp_path):
    counter = CountBatches()
    values = tiny_run(tmp_path, trainer={"max_steps": 4, "accumulate_grad_batches": 2})
    result = train(config_from_dict(values), callbacks=[counter])
    steps = [json.loads(line)["step"] for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert result["step"] == 4 and counter.batches == 8 and steps == [1, 2, 3, 4]
