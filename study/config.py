"""The study file: which variants to train, on what, and which stages to run within what budget.

    name: my_study
    budget_minutes: 10
    base:                        # one train run config (train/config.py) shared by every variant
      model: {hidden_size: 64, num_hidden_layers: 8, num_attention_heads: 2}
      data: {source: task, task: {name: mqar, vocab_size: 64, ...}}
      optim: {lr: 3.0e-3}
      trainer: {max_steps: 1500}  # the most steps; the budget may scale them down
    variants:                    # label -> dotted overrides of base, like a sweep's named axis
      full: {model.layers: F}
      minimax-7to1: {model.layers: LLLLLLLF}
      intra: {model.layers: I, model.mixers: {I: {type: intra, parts: [...]}}}
    stages: [train, eval, probe, crossover]
    train: {share: 0.6, executor: {kind: processes, workers: 2}}
    eval: {share: 0.15, suite: mqar, lengths: [64, 256, 1024], hops: [1, 2, 4], samples: 64}
    probe: {share: 0.1, probes: [kv_retrieval, induction], ablate: 2}
    crossover: {share: 0.15, lengths: [128, 1024, 8192], batch: 8}

configs/study/default.yaml is the documented example. Every field is checked when the file is read,
and an error names the field and what is allowed; the variants' run configs are checked too (by the
trainer's own parser) before anything runs.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path

from ..common import check_int_list, check_number, fail

STAGES = ("train", "eval", "probe", "crossover")
EXECUTORS = ("sequential", "processes", "submitit")


@dataclass
class TrainStage:
    share: float = 0.6  # of the budget
    min_steps: int = 20  # the fewest steps a variant trains, whatever the budget
    executor: dict = field(default_factory=lambda: {"kind": "processes", "workers": 2})

    def check(self, where: str) -> None:
        check_number(self.share, f"{where}.share", hi=1)
        check_number(self.min_steps, f"{where}.min_steps", integer=True)
        if not isinstance(self.executor, dict):
            fail(f"{where}.executor", self.executor, "must be a mapping like {kind: processes, workers: 2}")
        kind = self.executor.get("kind", "sequential")
        if kind not in EXECUTORS:
            fail(f"{where}.executor.kind", kind, f"allowed: {', '.join(EXECUTORS)}")

    @property
    def workers(self) -> int:
        return (
            1 if self.executor.get("kind", "sequential") == "sequential" else self.executor.get("workers", 1)
        )


@dataclass
class EvalStage:
    share: float = 0.15
    suite: str = "mqar"
    lengths: list[int] = field(default_factory=lambda: [64, 128, 256, 512, 1024])
    hops: list[int] = field(default_factory=lambda: [1, 2, 4])
    samples: int = 64  # the most per cell; the budget may take fewer (never under 8)
    batch_size: int = 16

    def check(self, where: str) -> None:
        from attnlab.evals import SUITES

        check_number(self.share, f"{where}.share", hi=1)
        if self.suite not in SUITES:
            fail(f"{where}.suite", self.suite, f"allowed: {', '.join(SUITES)}")
        check_int_list(self.lengths, f"{where}.lengths")
        check_int_list(self.hops, f"{where}.hops")
        check_number(self.samples, f"{where}.samples", integer=True)
        check_number(self.batch_size, f"{where}.batch_size", integer=True)


@dataclass
class ProbeStage:
    share: float = 0.1
    probes: list[str] = field(default_factory=lambda: ["kv_retrieval", "induction"])
    ablate: int = 2  # mask the top K heads of `ablate_by`, against K random heads
    ablate_by: str = "kv_retrieval"
    draws: int = 3
    max_context: int = 256
    needles: int = 2  # the most prompts per (length, depth) cell; the budget may take fewer

    def check(self, where: str) -> None:
        from attnlab.probes import probe_names

        check_number(self.share, f"{where}.share", hi=1)
        allowed = probe_names()
        if not isinstance(self.probes, list) or not self.probes:
            fail(f"{where}.probes", self.probes, f"a non-empty list from: {', '.join(allowed)}")
        for i, name in enumerate(self.probes):
            if name not in allowed:
                fail(f"{where}.probes[{i}]", name, f"allowed: {', '.join(allowed)}")
        if self.ablate_by not in allowed:
            fail(f"{where}.ablate_by", self.ablate_by, f"allowed: {', '.join(allowed)}")
        for name in ("ablate", "draws", "max_context", "needles"):
            check_number(getattr(self, name), f"{where}.{name}", integer=True)


@dataclass
class CrossoverStage:
    share: float = 0.15
    lengths: list[int] = field(default_factory=lambda: [128 << i for i in range(7)])
    batch: int = 8  # the larger decode batch (batch 1 is always measured)
    decode_steps: int = 6
    repeats: int = 2

    def check(self, where: str) -> None:
        check_number(self.share, f"{where}.share", hi=1)
        check_int_list(self.lengths, f"{where}.lengths")
        for name in ("batch", "decode_steps", "repeats"):
            check_number(getattr(self, name), f"{where}.{name}", integer=True)


SECTIONS = {"train": TrainStage, "eval": EvalStage, "probe": ProbeStage, "crossover": CrossoverStage}


@dataclass
class StudyConfig:
    name: str = "study"
    budget_minutes: float = 10.0
    seed: int = 0
    base: dict = field(default_factory=dict)
    variants: dict = field(default_factory=dict)
    stages: list[str] = field(default_factory=lambda: list(STAGES))
    train: TrainStage = field(default_factory=TrainStage)
    eval: EvalStage = field(default_factory=EvalStage)
    probe: ProbeStage = field(default_factory=ProbeStage)
    crossover: CrossoverStage = field(default_factory=CrossoverStage)

    def check(self) -> None:
        if not isinstance(self.name, str) or not self.name:
            fail("name", self.name, "must be a non-empty string")
        check_number(self.budget_minutes, "budget_minutes")
        if not isinstance(self.seed, int) or isinstance(self.seed, bool):
            fail("seed", self.seed, "must be an integer")
        if not isinstance(self.base, dict):
            fail("base", self.base, "must be a train run config (a mapping: model, data, optim, trainer)")
        if not isinstance(self.variants, dict) or not self.variants:
            fail(
                "variants",
                self.variants,
                "must map at least one label to overrides, e.g. {full: {model.layers: F}}",
            )
        for label, overrides in self.variants.items():
            if not isinstance(overrides, dict):
                fail(
                    f"variants.{label}",
                    overrides,
                    "must be a mapping of dotted overrides, e.g. {model.layers: F}",
                )
        if not isinstance(self.stages, list) or not self.stages or not set(self.stages) <= set(STAGES):
            fail("stages", self.stages, f"a non-empty list from: {', '.join(STAGES)}")
        if self.stages[0] != "train":
            fail("stages", self.stages, "must start with train (the later stages use its models)")
        for name in SECTIONS:
            getattr(self, name).check(name)
        if sum(getattr(self, s).share for s in self.stages) > 1.0 + 1e-9:
            fail(
                "shares",
                {s: getattr(self, s).share for s in self.stages},
                "the stages' shares must sum to <= 1",
            )
        if "crossover" in self.stages and "full" not in self.variants:
            fail(
                "variants",
                list(self.variants),
                "the crossover stage needs a variant named full (its reference)",
            )

    @property
    def budget_s(self) -> float:
        return 60.0 * self.budget_minutes

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def digest(self) -> str:
        """Identifies what the study computes (the budget aside: --budget-minutes may change on resume)."""
        values = {k: v for k, v in self.to_dict().items() if k != "budget_minutes"}
        return hashlib.sha256(json.dumps(values, sort_keys=True).encode()).hexdigest()[:16]


def from_dict(values: dict, where: str = "") -> StudyConfig:
    if not isinstance(values, dict):
        raise ValueError(f"the study file must be a mapping of fields; got {type(values).__name__}")
    fields = {f.name: f for f in dataclasses.fields(StudyConfig)}
    unknown = sorted(set(values) - set(fields))
    if unknown:
        raise ValueError(f"unknown field(s) {', '.join(unknown)}; allowed: {', '.join(fields)}")
    kwargs = dict(values)
    for name, cls in SECTIONS.items():
        section = kwargs.get(name) or {}
        if not isinstance(section, dict):
            raise ValueError(f"{name} = {section!r}: must be a mapping")
        allowed = [f.name for f in dataclasses.fields(cls)]
        bad = sorted(set(section) - set(allowed))
        if bad:
            raise ValueError(f"{name}: unknown field(s) {', '.join(bad)}; allowed: {', '.join(allowed)}")
        kwargs[name] = cls(**section)
    cfg = StudyConfig(**kwargs)
    cfg.check()
    return cfg


def load_study(path: str | Path) -> StudyConfig:
    """A study YAML as given, or relative to the installed attnlab/configs (e.g. study/default.yaml)."""
    from attnlab.train import check_yaml_file, find_config

    file = find_config(str(path))
    values = check_yaml_file(file)
    try:
        return from_dict(values or {})
    except ValueError as err:
        raise ValueError(f"{file}: {err}") from None
