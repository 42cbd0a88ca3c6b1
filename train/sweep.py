"""Sweeps: expand a grid into run configs, run the unfinished ones, aggregate.

    name: zoology_mqar
    out_dir: runs/sweeps/zoology_mqar
    base_config: train/mqar.yaml                 # a run YAML (path, or relative to attnlab/configs)
    base: {trainer: {max_steps: 600}}            # merged over base_config
    grid:                                        # the cartesian product of the axes, in order
      variant:                                   # a named axis: label -> dotted overrides
        full: {model.layers: FF}
        lightning: {model.layers: LL}
      model.hidden_size: [64, 128]               # a value axis: dotted key -> values
    summary: {metric: val/acc, best_of: [optim.lr], rows: [variant], columns: model.hidden_size}
    match_params: {axis: variant, reference: full, field: model.extra.intermediate_size}  # optional
    executor: {kind: sequential}                 # sequential | processes (workers: N) | submitit

Each run lives in `<out_dir>/runs/<label>_<label>…`; a run whose result.json says "finished" (or
"stopped" by a guard) with the same config hash is skipped, any other is (re)started with resume.
Every run config is validated before anything runs, so a typo fails fast, naming run and field.
"""

from __future__ import annotations

import copy
import itertools
import re
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from ..common import check_choice, check_positive_int
from .config import TrainConfig, config_from_dict, dump_config
from .run_files import config_hash, read_result

EXECUTORS = ("sequential", "processes", "submitit")
FINAL_STATUSES = ("finished", "stopped")  # a re-run would not change these


@dataclass
class ExecutorSection:
    kind: str = "sequential"
    workers: int = 1  # processes / local submitit: concurrent runs, torch threads split among them
    cluster: str | None = (
        None  # submitit: None picks slurm when available, else local; or local | debug | slurm
    )
    parameters: dict = field(
        default_factory=dict
    )  # submitit update_parameters (slurm_partition, timeout_min, …)

    def __post_init__(self) -> None:
        check_choice(self.kind, EXECUTORS, "executor.kind")
        check_positive_int(self.workers, "executor.workers")


@dataclass
class SummarySection:
    metric: str = "val/acc"
    metrics: list[str] = field(default_factory=list)  # several metrics as the columns (e.g. val/acc@64x4)
    mode: str = "max"  # max | min: which value of a metric is best
    best_of: list[str] = field(default_factory=list)  # axes optimised over in each cell (Zoology: lr)
    rows: list[str] | None = None  # axes forming the table rows; default: all others but `columns`
    columns: str | None = None  # axis across the columns; default: the last remaining axis

    def __post_init__(self) -> None:
        check_choice(self.mode, ("max", "min"), "summary.mode")


@dataclass
class MatchParamsSection:
    """Give every run the parameter count of its `reference` sibling on `axis` by solving for an
    integer `field` (intermediate_size by default: it changes no mixer)."""

    axis: str
    reference: str
    field: str = "model.extra.intermediate_size"


@dataclass
class SweepConfig:
    name: str = "sweep"
    out_dir: str = "runs/sweep"
    base_config: str | None = None
    base: dict = field(default_factory=dict)
    grid: dict = field(default_factory=dict)
    summary: SummarySection = field(default_factory=SummarySection)
    match_params: MatchParamsSection | None = None
    executor: ExecutorSection = field(default_factory=ExecutorSection)

    def __post_init__(self) -> None:
        if not self.grid:
            raise ValueError(
                "grid is empty; give at least one axis (dotted key -> list, or label -> overrides)"
            )
        for axis, values in self.grid.items():
            if isinstance(values, dict):
                if not values or not all(isinstance(v, dict) for v in values.values()):
                    raise ValueError(f"grid.{axis}: a named axis maps labels to dicts of overrides")
            elif not isinstance(values, list) or not values:
                raise ValueError(
                    f"grid.{axis}: must be a non-empty list of values or a dict label -> overrides"
                )
        axes = list(self.grid)
        for name in [
            *self.summary.best_of,
            *(self.summary.rows or []),
            *filter(None, [self.summary.columns]),
        ]:
            check_choice(name, tuple(axes), "summary axis")
        if self.summary.metrics and self.summary.columns:
            raise ValueError(
                "summary.metrics and summary.columns are both set; the columns are one or the other"
            )
        if self.match_params:
            check_choice(self.match_params.axis, tuple(axes), "match_params.axis")
            labels = tuple(axis_labels(self.grid[self.match_params.axis]))
            check_choice(self.match_params.reference, labels, "match_params.reference")


@dataclass
class Run:
    name: str
    labels: dict[str, str]  # axis -> label of its value in this run
    config: TrainConfig

    @property
    def run_dir(self) -> Path:
        return Path(self.config.run_dir)


# --- parsing --------------------------------------------------------------------------------
def sweep_parser():
    from jsonargparse import ActionConfigFile, ArgumentParser

    parser = ArgumentParser(prog="attnlab sweep", exit_on_error=False, description="Run a sweep YAML.")
    parser.add_argument("--config", action=ActionConfigFile, help="sweep YAML (configs/sweeps/*.yaml)")
    parser.add_argument("--dry_run", action="store_true", help="list the runs and what would be skipped")
    parser.add_class_arguments(SweepConfig, nested_key=None, fail_untyped=False)
    return parser


def parse_sweep_args(words: list[str]) -> tuple[SweepConfig, bool]:
    """`PATH [--executor.kind processes …]` -> (sweep, dry_run)."""
    from jsonargparse import ArgumentError

    if words and not words[0].startswith("-"):
        words = ["--config", str(find_config(words[0])), *words[1:]]
    parser = sweep_parser()
    try:
        ns = parser.parse_args(words)
    except ArgumentError as err:
        raise ValueError(str(err)) from None
    dry_run = bool(ns.pop("dry_run"))
    ns.pop("config", None)
    init = parser.instantiate(ns)
    return SweepConfig(**{k: v for k, v in vars(init).items()}), dry_run


def load_sweep(path: str | Path) -> SweepConfig:
    sweep, _ = parse_sweep_args([str(path)])
    return sweep


def find_config(path: str) -> Path:
    """A path as given, else relative to the installed attnlab/configs folder."""
    candidate = Path(path)
    if candidate.exists():
        return candidate
    import attnlab.configs

    packaged = Path(attnlab.configs.__file__).parent / path
    if packaged.exists():
        return packaged
    raise ValueError(f"config file {path!r} not found (looked in the working directory and attnlab/configs)")


# --- expansion ------------------------------------------------------------------------------
def axis_labels(values) -> dict[str, dict]:
    """An axis -> {label: {dotted key: value}} (value axes are keyed by the axis name itself)."""
    if isinstance(values, dict):
        return {str(label): overrides for label, overrides in values.items()}
    return {format_value(v): v for v in values}


def format_value(value) -> str:
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def set_dotted(values: dict, key: str, value) -> None:
    *parents, leaf = key.split(".")
    node = values
    for part in parents:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise ValueError(f"override {key!r}: {part!r} is not a section")
    if isinstance(value, dict) and isinstance(node.get(leaf), dict):
        merged = copy.deepcopy(node[leaf])
        for k, v in value.items():
            set_dotted(merged, k, v)
        node[leaf] = merged
    else:
        node[leaf] = copy.deepcopy(value)


def run_name(labels: dict[str, str], grid: dict) -> str:
    """Named axes contribute their label, value axes `leaf=value` (e.g. full_s64-kv4_hidden_size=64)."""
    parts = [
        label if isinstance(grid[axis], dict) else f"{axis.split('.')[-1]}={label}"
        for axis, label in labels.items()
    ]
    return re.sub(r"[^A-Za-z0-9._=+-]", "-", "_".join(parts))


def expand(sweep: SweepConfig) -> list[Run]:
    base: dict = {}
    if sweep.base_config:
        base = yaml.safe_load(find_config(sweep.base_config).read_text()) or {}
    for key, value in sweep.base.items():
        set_dotted(base, key, value)
    axes = {axis: axis_labels(values) for axis, values in sweep.grid.items()}
    runs, dicts = [], []
    for combo in itertools.product(*(labels.items() for labels in axes.values())):
        values = copy.deepcopy(base)
        labels = {}
        for axis, (label, overrides) in zip(axes, combo, strict=True):
            labels[axis] = label
            if isinstance(sweep.grid[axis], dict):
                for key, value in overrides.items():
                    set_dotted(values, key, value)
            else:
                set_dotted(values, axis, overrides)
        name = run_name(labels, sweep.grid)
        values["run_dir"] = str(Path(sweep.out_dir) / "runs" / name)
        dicts.append((name, labels, values))
    if sweep.match_params:
        match_parameters(dicts, sweep.match_params)
    for name, labels, values in dicts:
        try:
            runs.append(Run(name, labels, config_from_dict(values)))
        except ValueError as err:
            raise ValueError(f"sweep run {name}: {err}") from None
    if len({r.name for r in runs}) != len(runs):
        raise ValueError("two grid points give the same run name; make the axis labels distinct")
    return runs


def match_parameters(dicts: list, match: MatchParamsSection) -> None:
    from .params import count_params, solve_int_for_params

    by_labels = {tuple(sorted(labels.items())): values for _, labels, values in dicts}
    for name, labels, values in dicts:
        if labels[match.axis] == match.reference:
            continue
        reference = by_labels[tuple(sorted({**labels, match.axis: match.reference}.items()))]
        try:
            target = count_params(config_from_dict(reference))
            best = solve_int_for_params(config_from_dict(values), match.field, target)
        except ValueError as err:
            raise ValueError(f"sweep run {name}: match_params: {err}") from None
        set_dotted(values, match.field, best)


# --- running --------------------------------------------------------------------------------
@dataclass
class SweepOutcome:
    runs: list[Run]
    ran: list[str]
    skipped: list[str]
    results: list[dict]
    out_dir: Path
    summary: str = ""
    dry_run: bool = False

    @property
    def all_finished(self) -> bool:
        return all(r.get("status") in FINAL_STATUSES for r in self.results)

    def report(self) -> str:
        if self.dry_run:
            return f"attnlab sweep (dry run): {len(self.runs)} runs, {len(self.skipped)} already done\n{self.summary}"
        return (
            f"attnlab sweep: {len(self.runs)} runs ({len(self.ran)} run now, {len(self.skipped)} already done) "
            f"-> {self.out_dir}/results.csv, summary.md, plots\n\n{self.summary}"
        )


def pending_runs(runs: list[Run]) -> tuple[list[Run], list[Run]]:
    todo, done = [], []
    for run in runs:
        result = read_result(run.run_dir)
        if result and result.get("status") in FINAL_STATUSES:
            if result.get("config_hash") != config_hash(run.config):
                raise ValueError(
                    f"sweep run {run.name} in {run.run_dir} finished with a different config; "
                    f"delete that folder to re-run it, or use another out_dir"
                )
            done.append(run)
        else:
            todo.append(run)
    return todo, done


def run_sweep(sweep: SweepConfig, dry_run: bool = False) -> SweepOutcome:
    from .executors import execute
    from .sweep_report import write_reports

    runs = expand(sweep)
    todo, done = pending_runs(runs)
    out_dir = Path(sweep.out_dir)
    if dry_run:
        lines = [f"{'skip' if r in done else 'run '} {r.name}" for r in runs]
        return SweepOutcome(runs, [], [r.name for r in done], [], out_dir, "\n".join(lines), dry_run=True)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "sweep.yaml").write_text(yaml.safe_dump(_plain(sweep), sort_keys=False))
    for run in todo:
        run.run_dir.mkdir(parents=True, exist_ok=True)
        (run.run_dir / "config.yaml").write_text(dump_config(run.config))
    if todo:
        execute([r.run_dir / "config.yaml" for r in todo], sweep.executor, out_dir)
    results = [{"run": r.name, **r.labels, **(read_result(r.run_dir) or {"status": "missing"})} for r in runs]
    summary = write_reports(results, sweep, out_dir)
    return SweepOutcome(runs, [r.name for r in todo], [r.name for r in done], results, out_dir, summary)


def _plain(sweep: SweepConfig) -> dict:
    import dataclasses

    return dataclasses.asdict(sweep)
