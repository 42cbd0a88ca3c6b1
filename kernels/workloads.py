"""Workloads from YAML (default `configs/kernels.yaml`): model shapes x sweeps, one list per op.

    models:                          # attention shapes of published models
      minimax-01: {heads: 64, head_dim: 128}
    suites:
      cpu:                           # a named set of workloads
        lightning_prefill:
          - {model: minimax-01, heads: 8, head_dim: 64, seq_len: [4096], dtype: [float32]}

An entry starts from its model's fields, then its own keys override them. Every list value is a
sweep: an entry expands to the cartesian product of its lists (a packed batch, `pack`, the
paged lengths, `seq_lens`, and lightning_prefill's token indices, `checkpoints`, are lists of lists). Each op turns one expanded entry into a Workload
(`Definition.make_workload`) and rejects keys it does not know, naming them.
"""

from __future__ import annotations

import itertools
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from . import registry
from .definition import Workload


def default_config() -> Path:
    return Path(str(resources.files("attnlab.configs").joinpath("kernels.yaml")))


def read_config(path: Path | None = None) -> dict:
    path = Path(path) if path else default_config()
    if not path.exists():
        raise ValueError(f"--config {path}: file not found")
    data = yaml.safe_load(path.read_text()) or {}
    if not isinstance(data.get("suites"), dict) or not data["suites"]:
        raise ValueError(f"{path}: needs a 'suites' mapping (suite name -> op -> list of entries)")
    return data


def expand(entry: dict) -> list[dict]:
    """{'seq_len': [1, 2], 'dtype': ['a', 'b']} -> the 4 single-valued dicts."""
    sweeps = {k: v for k, v in entry.items() if isinstance(v, list)}
    fixed = {k: v for k, v in entry.items() if not isinstance(v, list)}
    return [
        {**fixed, **dict(zip(sweeps, combo, strict=True))} for combo in itertools.product(*sweeps.values())
    ]


def suite_workloads(config: dict, suite: str, ops: list[str] | None = None) -> dict[str, list[Workload]]:
    """-> op -> workloads of `suite`, in file order."""
    suites = config["suites"]
    if suite not in suites:
        raise ValueError(f"--suite {suite!r} is not in the config; allowed: {', '.join(suites)}")
    models = config.get("models", {})
    out: dict[str, list[Workload]] = {}
    for op, entries in suites[suite].items():
        if ops is not None and op not in ops:
            continue
        defn = registry.definition(op)  # raises for an unknown op name
        for i, entry in enumerate(entries):
            where = f"suites.{suite}.{op}[{i}]"
            model = entry.get("model")
            if model is not None and model not in models:
                raise ValueError(f"{where}.model = {model!r} is unknown; allowed: {', '.join(models)}")
            merged = {**models.get(model, {}), **entry}
            for flat in expand(merged):
                out.setdefault(op, []).append(defn.make_workload(flat, where))
    return out


def take(entry: dict, where: str, defaults: dict[str, Any]) -> dict[str, Any]:
    """entry's values for the keys an op knows (defaults fill the rest); unknown keys are an error.

    Model fields an op does not use (a model lists all its attention shapes) are ignored, so only
    the entry's own typos fail; `model` is metadata."""
    unknown = sorted(set(entry) - set(defaults) - MODEL_FIELDS - {"model"})
    if unknown:
        raise ValueError(f"{where}: unknown key(s) {unknown}; allowed: {', '.join(sorted(defaults))}")
    return {k: entry.get(k, v) for k, v in defaults.items()}


# Fields a `models:` entry may carry (the union over ops); an op ignores those it does not use.
MODEL_FIELDS = {
    "heads",
    "kv_heads",
    "head_dim",
    "window",
    "sinks",
    "kv_lora_rank",
    "qk_rope_head_dim",
    "qk_nope_head_dim",
    "block_size",
}


def dtype_input(dtype: str) -> dict:
    return {"type": "random", "dtype": dtype}


def short_dtype(dtype: str) -> str:
    return {"float32": "fp32", "bfloat16": "bf16", "float16": "fp16", "float64": "fp64"}.get(dtype, dtype)


def window_and_sinks(values: dict, inputs: dict) -> str:
    """Add a softmax workload's optional `window` and `sinks` inputs -> their part of its label."""
    label = ""
    if values["window"] is not None:
        inputs["window"] = {"type": "scalar", "value": values["window"]}
        label += f" W{values['window']}"
    if values["sinks"]:
        inputs["sinks"] = dtype_input(values["dtype"])
        label += " sinks"
    return label


def harness_fields(values: dict, where: str) -> dict:
    """The `reference` and `skip` keys every op accepts -> Workload keyword arguments."""
    skip = values.get("skip") or ""
    if not isinstance(skip, str):
        raise ValueError(f"{where}.skip = {skip!r}: a comma-separated string of backend names")
    return {
        "reference": values.get("reference") or "torch",
        "skip": tuple(s.strip() for s in skip.split(",") if s.strip()),
    }


HARNESS_DEFAULTS = {"reference": "torch", "skip": ""}
