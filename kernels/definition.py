"""The harness data model, in FlashInfer-Bench's terms (flashinfer-ai/flashinfer-bench, its trace format).

    Definition  what an op computes: name, op_type, axes (const | var), inputs, outputs, reference
    Workload    one concrete call: values of the var axes and how each input is made
    Solution    one implementation of a Definition (a backend): spec {language, target_hardware,
                entry_point}; registered in `registry.py`
    Trace       Definition x Workload x Solution -> evaluation {status, correctness, performance,
                environment}

Field names are FlashInfer-Bench's so a trace reads the same to someone who knows it. attnlab adds
a few runtime-only fields (callables, which inputs take gradients); `to_json` leaves them out or
writes their names.
"""

from __future__ import annotations

import uuid as uuid_lib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any


@dataclass
class Definition:
    name: str
    op_type: str
    axes: dict[str, dict]  # axis -> {"type": "var"} | {"type": "const", "value": int}
    inputs: dict[str, dict]  # name -> {"shape": [axis, ...] | None (scalar), "dtype": str, "optional": bool}
    outputs: dict[str, dict]
    reference: Callable  # plain torch, the ground truth every backend is checked against
    description: str = ""
    # attnlab runtime fields (not in FlashInfer-Bench): which inputs/outputs carry gradients, and a
    # generator of concrete inputs for a Workload (block tables and cu_seqlens are not "random").
    grad_inputs: tuple[str, ...] = ()
    make_inputs: Callable | None = None  # (workload, device, generator) -> inputs
    make_workload: Callable | None = None  # (one expanded YAML entry, where) -> Workload

    def to_json(self) -> dict:
        ref = self.reference
        return {
            "name": self.name,
            "op_type": self.op_type,
            "axes": self.axes,
            "inputs": self.inputs,
            "outputs": self.outputs,
            "reference": f"{ref.__module__}.{ref.__qualname__}",
            "description": self.description,
        }


@dataclass
class Workload:
    axes: dict[str, int]  # values of the definition's var axes
    inputs: dict[str, dict]  # name -> {"type": "random" | "scalar" | "generated", ...}
    uuid: str = field(default_factory=lambda: uuid_lib.uuid4().hex[:12])
    # attnlab: a short human label for tables ("T=4096 fp32", "pack 3 seqs"), and the model the
    # shape came from.
    label: str = ""
    source: str = ""
    # attnlab: the backend whose outputs are the ground truth (the torch reference unless it cannot
    # run the size, e.g. the recurrence's autograd graph at T = 32K), and backends not to run.
    reference: str = "torch"
    skip: tuple[str, ...] = ()

    def to_json(self) -> dict:
        return {
            "axes": self.axes,
            "inputs": self.inputs,
            "uuid": self.uuid,
            "label": self.label,
            "source": self.source,
            "reference": self.reference,
        }


@dataclass
class Trace:
    definition: str
    workload: dict
    solution: str
    evaluation: dict[str, Any]  # {status, log, correctness, performance, environment, timestamp}

    def to_json(self) -> dict:
        return {
            "definition": self.definition,
            "workload": self.workload,
            "solution": self.solution,
            "evaluation": self.evaluation,
        }
