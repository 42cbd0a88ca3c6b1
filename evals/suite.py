"""Suites: named task lists plus the grid (lengths x hops) and sampling settings of a run.

A `SuiteSpec` is what the runner, the training hook and the lm-eval tasks share; it is built from
CLI flags or from a plain dict (a trainer's YAML), and validates itself so a bad value fails with a
message naming the field.
"""

from __future__ import annotations

import inspect
from dataclasses import asdict, dataclass, field

from ..common import check_bool, check_positive_int
from .mqar import check_mqar_args, mqar
from .suite_names import SUITES
from .text_tasks import TEXT_TASKS

TOKEN_TASKS = ("mqar",)  # teacher-forced, token-level (evals/mqar.py); k-hop when hops > 1


def all_tasks() -> tuple[str, ...]:
    return TOKEN_TASKS + tuple(sorted(TEXT_TASKS))


def option_names(task: str) -> tuple[str, ...]:
    """What `SuiteSpec.options[task]` may set: the generator's keyword options that the runner does
    not set itself (for mqar also `kv_pairs`, default length/16)."""
    if task in TOKEN_TASKS:
        keywords = [p.name for p in inspect.signature(mqar).parameters.values() if p.default is not p.empty]
        return ("kv_pairs", *(k for k in keywords if k != "hops"))
    spec = TEXT_TASKS.get(task)
    params = list(inspect.signature(spec.build).parameters.values())[5:]  # after tokenizer .. index
    return tuple(p.name for p in params if p.name not in spec.fixed)


def check_options(task: str, options: dict) -> None:
    allowed = option_names(task)
    if not isinstance(options, dict) or not set(options) <= set(allowed):
        unknown = sorted(set(options) - set(allowed)) if isinstance(options, dict) else options
        raise ValueError(f"suite options[{task!r}]: unknown {unknown!r}; allowed: {', '.join(allowed)}")
    if task in TOKEN_TASKS:  # values too: a bad one would otherwise only skip every cell
        kv = options.get("kv_pairs", 1)
        check_positive_int(kv, "suite options['mqar'].kv_pairs")
        try:
            check_mqar_args(
                1, 2**20, kv, 2**20, options.get("power_a", 0.01), 1, options.get("separator", False)
            )
            check_bool(options.get("random_non_queries", True), "mqar.random_non_queries")
        except ValueError as err:
            raise ValueError(f"suite options['mqar']: {err}") from None


def max_hops(task: str) -> int | None:
    return None if task in TOKEN_TASKS else TEXT_TASKS.get(task).max_hops


@dataclass
class SuiteSpec:
    suite: str = "multihop"
    lengths: tuple[int, ...] = (256, 512, 1024, 2048, 4096)
    hops: tuple[int, ...] = (1, 2, 4)
    samples: int = 20  # per (task, length, hops) cell
    seed: int = 1234
    batch_size: int = 8
    tasks: tuple[str, ...] | None = None  # None: the suite's tasks
    options: dict[str, dict] = field(default_factory=dict)  # per-task generator options

    def __post_init__(self):
        if self.suite not in SUITES:
            raise ValueError(f"suite {self.suite!r} is unknown; allowed: {', '.join(SUITES)}")
        self.lengths = tuple(self.lengths)
        self.hops = tuple(self.hops)
        for name in ("lengths", "hops"):
            values = getattr(self, name)
            if not values or not all(
                isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in values
            ):
                raise ValueError(f"suite {name} = {values!r}: expected a non-empty list of positive integers")
        for name in ("samples", "batch_size"):
            value = getattr(self, name)
            if not isinstance(value, int) or value <= 0:
                raise ValueError(f"suite {name} = {value!r}: expected a positive integer")
        if self.tasks is not None:
            self.tasks = tuple(self.tasks)
            unknown = [t for t in self.tasks if t not in all_tasks()]
            if unknown or not self.tasks:
                raise ValueError(
                    f"suite tasks {list(unknown or self.tasks)} unknown; allowed: {', '.join(all_tasks())}"
                )
        unknown = sorted(set(self.options) - set(all_tasks()))
        if unknown:
            raise ValueError(
                f"suite options for unknown task(s) {unknown}; allowed: {', '.join(all_tasks())}"
            )
        for task, options in self.options.items():
            check_options(task, options)

    @classmethod
    def from_dict(cls, data: dict) -> SuiteSpec:
        allowed = set(cls.__dataclass_fields__)
        unknown = sorted(set(data) - allowed)
        if unknown:
            raise ValueError(
                f"suite spec has unknown field(s) {unknown}; allowed: {', '.join(sorted(allowed))}"
            )
        return cls(**data)

    def to_dict(self) -> dict:
        """JSON-ready (lists, not tuples), so a saved spec compares equal to a loaded one."""
        out = asdict(self)
        out.update(lengths=list(self.lengths), hops=list(self.hops), task_names=list(self.task_names))
        out["tasks"] = None if self.tasks is None else list(self.tasks)
        return out

    @property
    def task_names(self) -> tuple[str, ...]:
        return self.tasks if self.tasks is not None else SUITES[self.suite]

    def cells(self) -> list[tuple[str, int, int]]:
        """(task, length, hops) for every task and every hops value it supports."""
        out = []
        for task in self.task_names:
            limit = max_hops(task)
            for hops in self.hops:
                if limit is None or hops <= limit:
                    out += [(task, length, hops) for length in self.lengths]
        return out
