"""What `attnlab bench quant` measures on one model folder, apart from speed (quant_bench_speed.py):

- validation loss: mean NLL per answer token over the held-out rows of every data slice of the run
  that trained the family — the rows its trainer validated on (for the text LM: its held-out text),
  pooled as the trainer pools them, so the fp32 variant's loss is the run's own val/loss;
- the k-hop MQAR task of the multi-hop eval suite (evals: `attnlab eval --suite mqar`): chain
  accuracy by length and hops, with the generator options the run trained with;
- head scores per (layer, head) from probes/ (default: Wu et al.'s retrieval score on MQAR-format
  prompts, and TransformerLens's induction score);
- weight bytes (attnlab.quant.weight_bytes: an Int4Linear as its packed INT4 weight + scales): the
  whole model and the modules the scheme quantizes; for the fp32 model also in bf16.

An INT4 model is loaded as its users load it (Int4Linear modules on torch's packed INT4 matmul), its
bytes counted, and then measured with each Int4Linear replaced by an nn.Linear holding its
dequantized weight (q x scale): the same INT4 weights and, in float32, the same outputs up to
summation order — checked on every model (`kernel_check`: the largest logit difference between the
two on a few held-out rows) — because torch's CPU INT4 matmul is written for decoding: on inputs of
thousands of rows it runs 50-100x slower than a float32 matmul (measured on the development
machine), which would make the loss and eval of each INT4 model take many minutes. Decode speed
(quant_bench_speed.py) runs the Int4Linear modules themselves.
"""

from __future__ import annotations

import copy
import dataclasses
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn


@dataclass
class MeasureSettings:
    lengths: list[int] = field(default_factory=lambda: [64, 128, 256, 512])
    hops: list[int] = field(default_factory=lambda: [1, 2, 4])
    samples: int = 32  # per (length, hops) cell
    eval_batch: int = 16
    probes: list[str] = field(default_factory=lambda: ["kv_retrieval", "induction"])
    probe_batch: int = 10  # induction: sequences (TransformerLens: 10)
    niah_lengths: int = 2  # retrieval probes: prompt lengths x depths x needles
    niah_depths: int = 5
    niah_needles: int = 2
    seed: int = 0
    threads: int = 1


def validation_slices(run_dir: Path):
    """The held-out rows the run's trainer validated on (train/data.py's build_data), without
    generating its training rows: a task slice's validation rows depend on the seed and the slice,
    not on how many training rows there are."""
    from ..train import build_data, parse_args

    cfg, _ = parse_args(["--config", str(Path(run_dir) / "config.yaml")])
    data = cfg.data
    if data.source == "task":
        task = data.task
        mixture = [{**entry, "train_examples": 1} for entry in task.mixture]
        data = dataclasses.replace(data, task=dataclasses.replace(task, train_examples=1, mixture=mixture))
    return build_data(data, Path(run_dir), cfg.seed).slices


@torch.no_grad()
def validation_loss(model, slices) -> dict:
    """-> {"loss": pooled NLL per answer token, "by_slice": {slice: its loss}} (as CausalLMModule's
    validation: logits at t predict labels at t + 1; -100 marks tokens without a loss)."""
    total_nll, total_n, by_slice = 0.0, 0, {}
    for s in slices:
        nll, n = 0.0, 0
        for start in range(0, len(s.val_ids), s.batch_size):
            ids, labels = s.val_ids[start : start + s.batch_size], s.val_labels[start : start + s.batch_size]
            logits = model(input_ids=ids, use_cache=False).logits[:, :-1].float()  # [B, T-1, V]
            target = labels[:, 1:]
            nll += F.cross_entropy(
                logits.flatten(0, 1), target.flatten(), ignore_index=-100, reduction="sum"
            ).item()
            n += int((target != -100).sum())
        by_slice[s.name] = nll / max(n, 1)
        total_nll, total_n = total_nll + nll, total_n + n
    return {"loss": total_nll / max(total_n, 1), "by_slice": by_slice}


def mqar_accuracy(model, mqar_options: dict, settings: MeasureSettings) -> dict:
    """-> {"accuracy": {hops: {length: chain accuracy or None (cell skipped)}}, "mean": over the
    cells that ran, "skipped": {cell: why}}."""
    from ..evals import SuiteSpec, run_suite

    spec = SuiteSpec(
        suite="mqar", lengths=tuple(settings.lengths), hops=tuple(settings.hops), samples=settings.samples,
        seed=settings.seed, batch_size=settings.eval_batch, options={"mqar": mqar_options},
    )  # fmt: skip
    cells = run_suite(model, None, spec, progress=False).cells
    accuracy = {str(h): {str(n): None for n in settings.lengths} for h in settings.hops}
    skipped = {}
    for c in cells:
        accuracy[str(c["hops"])][str(c["length"])] = c["score"]
        if c["score"] is None:
            skipped[f"{c['length']}x{c['hops']}"] = c.get("skipped")
    scores = [c["score"] for c in cells if c["score"] is not None]
    return {"accuracy": accuracy, "mean": sum(scores) / len(scores) if scores else None, "skipped": skipped}


def head_scores(model, settings: MeasureSettings, separator: bool) -> dict:
    """probe -> {"scores": [layer][head] (None: no score), "details": the probe's own counts}."""
    from ..probes import ProbeSettings, ProbeTarget, get_probe

    probe_settings = ProbeSettings(
        seed=settings.seed, batch=settings.probe_batch, niah_lengths=settings.niah_lengths,
        niah_depths=settings.niah_depths, niah_needles=settings.niah_needles, kv_separator=separator,
        progress=False,
    )  # fmt: skip
    target = ProbeTarget.wrap(model)
    out = {}
    for name in settings.probes:
        result = get_probe(name).score(target, probe_settings).to_dict()
        out[name] = {"scores": result["scores"], "details": result["details"]}
    return out


def weight_sizes(model) -> dict:
    """Bytes of the whole model and of the modules the scheme quantizes (the default scheme's for a
    float model, the Int4Linear modules for an INT4 one); a float model also as bf16."""
    from ..quant import QuantScheme, int4_modules, select_linears, weight_bytes

    int4 = list(int4_modules(model))
    names = int4 or select_linears(model, QuantScheme())
    sizes = {
        "model": weight_bytes(model),
        "quantized_modules": weight_bytes(model, names),
        "modules": len(names),
        "int4_modules": len(int4),
    }
    if not int4:
        bf16 = copy.deepcopy(model).to(torch.bfloat16)
        sizes.update(bf16_model=weight_bytes(bf16), bf16_quantized_modules=weight_bytes(bf16, names))
    return sizes


def dequantized(model) -> nn.Module:
    """Each Int4Linear of `model` replaced, in place, by an nn.Linear holding its weight q x scale
    (and its bias) -> the model."""
    from ..quant import int4_modules

    for name, module in int4_modules(model).items():
        weight = module.weight  # Int4Linear.weight: the dequantized [N, K], computed on each access
        linear = nn.Linear(
            module.in_features, module.out_features, bias=module.bias is not None, device=weight.device
        )
        with torch.no_grad():
            linear.weight.copy_(weight)
            if module.bias is not None:
                linear.bias.copy_(module.bias)
        model.set_submodule(name, linear)
    return model


@torch.no_grad()
def kernel_check(int4_model, float_model, slices, rows: int = 4) -> float:
    """The largest |logit difference| between the INT4 kernel model and its dequantized copy on the
    first `rows` held-out rows of the first slice."""
    ids = slices[0].val_ids[:rows]
    a = int4_model(input_ids=ids, use_cache=False).logits
    b = float_model(input_ids=ids, use_cache=False).logits
    return (a - b).abs().max().item()


def measure_family(family: str, folders: dict[str, str], run_dir: str, text: bool, settings: MeasureSettings):
    """Every measurement but speed for each variant folder of one family (a worker's job)
    -> {variant: measurements}."""
    from ..evals import load_model, training_mqar_options
    from .quant_bench_models import quiet_model_io

    quiet_model_io()
    torch.set_num_threads(settings.threads)
    slices = validation_slices(Path(run_dir))
    mqar_options = {} if text else training_mqar_options(run_dir, Path(run_dir) / "hf")
    out = {}
    for variant, folder in folders.items():
        model, _, _ = load_model(folder, "cpu")
        sizes = weight_sizes(model)
        check = None
        if sizes["int4_modules"]:
            int4_model = model
            model = dequantized(copy.deepcopy(int4_model))
            check = kernel_check(int4_model, model, slices)
            del int4_model
        torch.manual_seed(settings.seed)
        out[variant] = {
            "folder": str(folder),
            "bytes": sizes,
            "kernel_check": check,
            **validation_loss(model, slices),
            "eval": None if text else mqar_accuracy(model, mqar_options, settings),
            "heads": head_scores(model, settings, separator=bool(mqar_options.get("separator"))),
        }
    return out
