"""The run configuration: model, data, optimiser and trainer in one YAML (DESIGN.md "train").

    run_dir: runs/mqar
    model: {layers: LF, hidden_size: 64, num_attention_heads: 1}
    data:  {source: task, task: {name: mqar, seq_len: 64, num_kv_pairs: 4, vocab_size: 64}}
    optim: {lr: 3.0e-3, schedule: cosine, warmup_steps: 50}
    trainer: {max_steps: 600, val_every: 100}
    eval: {suite: mqar, lengths: [64, 256], hops: [1, 2], samples: 32}   # optional

Parsed by jsonargparse (`config_parser()`), so a YAML file, CLI overrides (`--optim.lr 1e-3`) and the
sweeps' generated configs all go through one path: types are checked by the parser, value ranges by
each section's `__post_init__`, and every error names the field and the allowed values.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..archs.presets import PRESETS, preset
from ..evals.mqar import check_mqar_args
from .tasks import TASKS

DATA_SOURCES = ("task", "text")
MIXTURE_FIELDS = (
    "seq_len",
    "num_kv_pairs",
    "hops",
    "train_examples",
    "val_examples",
    "batch_size",
    "start_step",
)
SCHEDULES = ("cosine", "wsd", "constant")
# Lightning precision names that make sense for these models (fp64 for parity checks).
PRECISIONS = ("64-true", "32-true", "bf16-mixed", "bf16-true", "16-mixed", "16-true")


def choose(value: Any, allowed: tuple, where: str) -> None:
    if value not in allowed:
        raise ValueError(f"{where} = {value!r}; allowed: {', '.join(map(str, allowed))}")


def positive(value: Any, where: str, allow_zero: bool = False) -> None:
    ok = (
        isinstance(value, (int, float))
        and not isinstance(value, bool)
        and (value >= 0 if allow_zero else value > 0)
    )
    if not ok:
        raise ValueError(
            f"{where} = {value!r}: must be a {'non-negative' if allow_zero else 'positive'} number"
        )


def fraction(value: Any, where: str) -> None:
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not 0 <= value < 1:
        raise ValueError(f"{where} = {value!r}: must be a number in [0, 1)")


@dataclass
class ModelSection:
    """AttnLabConfig fields; `preset` (archs/presets.py) supplies `layers` and `mixers` defaults."""

    preset: str | None = None
    layers: str | list | None = None  # pattern ("LF") or one mixer spec per layer; default "F"
    mixers: dict = field(default_factory=dict)  # letter -> spec, merged over the preset's
    hidden_size: int = 128
    num_hidden_layers: int = 2
    num_attention_heads: int = 4
    num_key_value_heads: int | None = None
    ffn: str = "dense"
    vocab_size: int | None = None  # None: the data's vocabulary (task vocab or tokenizer size)
    extra: dict = field(default_factory=dict)  # any other AttnLabConfig field (intermediate_size, …)

    def __post_init__(self) -> None:
        if self.preset is not None:
            choose(self.preset, tuple(sorted(PRESETS)), "model.preset")
        reserved = {f.name for f in dataclasses.fields(self)} & set(self.extra)
        if reserved:
            raise ValueError(f"model.extra sets {sorted(reserved)}; set them as model.<field> instead")
        self.hf_config(self.vocab_size or 256)  # validate now, so errors come before any training

    def hf_kwargs(self, data_vocab_size: int) -> dict:
        layout = preset(self.preset) if self.preset else {"layers": "F", "mixers": {}}
        return dict(
            vocab_size=self.vocab_size or data_vocab_size,
            hidden_size=self.hidden_size,
            num_hidden_layers=self.num_hidden_layers,
            num_attention_heads=self.num_attention_heads,
            num_key_value_heads=self.num_key_value_heads,
            layers=self.layers if self.layers is not None else layout["layers"],
            mixers={**layout["mixers"], **self.mixers},
            ffn=self.ffn,
            **self.extra,
        )

    def hf_config(self, data_vocab_size: int):
        from ..archs.config import AttnLabConfig

        try:
            return AttnLabConfig(**self.hf_kwargs(data_vocab_size))
        except (ValueError, TypeError) as err:
            raise ValueError(f"model: {err}") from None


@dataclass
class TaskSection:
    """A synthetic task from evals/ (train/tasks.py); loss only on answer tokens.

    `mixture` trains one model on several slices at once, e.g. Zoology/Based's MQAR mix
    [{seq_len: 64, num_kv_pairs: 4}, {seq_len: 256, num_kv_pairs: 16, batch_size: 16}]: batches
    alternate round-robin between the slices active at that step (each batch one slice, so no
    padding; `start_step` delays a slice, a curriculum), and validation reports every slice on its
    own (val/acc@64x4, …) besides the pooled val/acc. Each entry overrides the fields in
    MIXTURE_FIELDS; the fields above are the defaults.
    """

    name: str = "mqar"
    seq_len: int = 64
    num_kv_pairs: int = 4
    vocab_size: int = 8192
    hops: int = 1
    power_a: float = 0.01
    random_non_queries: bool = True
    separator: bool = False  # k-hop: each context pair written `0 k v` (evals/mqar.py)
    train_examples: int = 20_000
    val_examples: int = 512
    mixture: list[dict] = field(default_factory=list)

    def __post_init__(self) -> None:
        choose(self.name, tuple(sorted(TASKS)), "data.task.name")
        for name in ("train_examples", "val_examples"):
            positive(getattr(self, name), f"data.task.{name}")
        try:
            check_mqar_args(
                1, self.seq_len, self.num_kv_pairs, self.vocab_size, self.power_a, self.hops, self.separator
            )
        except ValueError as err:
            raise ValueError(str(err).replace("mqar.", "data.task.")) from None
        for i, entry in enumerate(self.mixture):
            where = f"data.task.mixture[{i}]"
            if not isinstance(entry, dict) or not set(entry) <= set(MIXTURE_FIELDS):
                raise ValueError(f"{where} = {entry!r}: a dict with keys among {', '.join(MIXTURE_FIELDS)}")
            if "batch_size" in entry:
                positive(entry["batch_size"], f"{where}.batch_size")
            if "start_step" in entry:
                positive(entry["start_step"], f"{where}.start_step", allow_zero=True)
            try:
                self.slice(entry)
            except ValueError as err:
                raise ValueError(f"{where}: {err}") from None
        if self.mixture:
            self.slices(1)  # slice names must be distinct

    def slice(self, entry: dict) -> TaskSection:
        fields = {k: v for k, v in entry.items() if k not in ("batch_size", "start_step")}
        return dataclasses.replace(self, **fields, mixture=[])

    def slices(self, batch_size: int) -> list[tuple[str, TaskSection, int, int]]:
        """-> [(name, task, batch size, start step)]: the mixture's slices, or this task alone."""
        out = []
        for entry in self.mixture or [{}]:
            task = self.slice(entry)
            name = f"{task.seq_len}x{task.num_kv_pairs}" + (f"h{task.hops}" if task.hops > 1 else "")
            out.append((name, task, entry.get("batch_size", batch_size), entry.get("start_step", 0)))
        if not any(start == 0 for *_, start in out):
            raise ValueError("data.task.mixture: at least one slice needs start_step 0 (the default)")
        if len({name for name, *_ in out}) != len(out):
            raise ValueError("data.task.mixture: two slices have the same seq_len, num_kv_pairs and hops")
        return out


@dataclass
class TextSection:
    """A text corpus through `datasets`, packed into rows of seq_len tokens."""

    files: list[str] = field(default_factory=list)  # local .txt/.jsonl/.json/.parquet; empty: stdlib source
    dataset: str | None = None  # a hub dataset name instead of files (needs network)
    split: str = "train"
    text_field: str = "text"
    tokenizer: str = "byte"  # byte | bpe | path of a Hugging Face tokenizer
    bpe_vocab_size: int = 4096
    seq_len: int = 256
    max_chars: int | None = None  # cap on corpus characters read (after a seeded document shuffle)
    val_fraction: float = 0.02

    def __post_init__(self) -> None:
        for name in ("bpe_vocab_size", "seq_len"):
            positive(getattr(self, name), f"data.text.{name}")
        if self.seq_len < 2:
            raise ValueError(
                f"data.text.seq_len = {self.seq_len}: must be >= 2 (one prediction needs two tokens)"
            )
        if self.max_chars is not None:
            positive(self.max_chars, "data.text.max_chars")
        fraction(self.val_fraction, "data.text.val_fraction")
        if self.tokenizer not in ("byte", "bpe") and not Path(self.tokenizer).is_dir():
            raise ValueError(
                f"data.text.tokenizer = {self.tokenizer!r}: allowed: byte, bpe, or a Hugging Face tokenizer folder"
            )
        if self.files and self.dataset:
            raise ValueError("data.text.files and data.text.dataset are both set; choose one source")


@dataclass
class DataSection:
    source: str = "task"  # task | text
    task: TaskSection = field(default_factory=TaskSection)
    text: TextSection = field(default_factory=TextSection)
    batch_size: int = 32

    def __post_init__(self) -> None:
        choose(self.source, DATA_SOURCES, "data.source")
        positive(self.batch_size, "data.batch_size")


@dataclass
class OptimSection:
    """AdamW with linear warmup, then cosine to min_lr_ratio·lr, WSD (stable, then linear decay over
    the last decay_fraction of steps), or constant."""

    lr: float = 1e-3
    weight_decay: float = 0.1
    beta1: float = 0.9
    beta2: float = 0.95
    eps: float = 1e-8
    schedule: str = "cosine"
    warmup_steps: int = 100
    min_lr_ratio: float = 0.1
    decay_fraction: float = 0.2
    grad_clip: float = 1.0  # max global grad norm; 0 disables clipping

    def __post_init__(self) -> None:
        positive(self.lr, "optim.lr")
        positive(self.eps, "optim.eps")
        for name in ("weight_decay", "warmup_steps", "grad_clip"):
            positive(getattr(self, name), f"optim.{name}", allow_zero=True)
        for name in ("beta1", "beta2", "min_lr_ratio"):
            fraction(getattr(self, name), f"optim.{name}")
        choose(self.schedule, SCHEDULES, "optim.schedule")
        if not 0 < self.decay_fraction <= 1:
            raise ValueError(f"optim.decay_fraction = {self.decay_fraction!r}: must be in (0, 1]")


@dataclass
class TrainerSection:
    max_steps: int = 1000  # optimizer steps
    accumulate_grad_batches: int = 1
    precision: str = "32-true"
    val_every: int = 200  # steps between validations
    log_every: int = 10  # steps between metrics.jsonl rows
    checkpoint_every: int = 100  # steps between periodic checkpoints (last.ckpt is always kept)
    keep_checkpoints: int = 2  # periodic checkpoints kept besides last.ckpt
    accelerator: str = "auto"  # passed to lightning.Trainer
    devices: int | str = "auto"
    strategy: str = "auto"  # auto | ddp | fsdp | deepspeed … (Lightning's registry)
    num_nodes: int = 1
    compile: bool = False  # torch.compile the model (inductor cache kept in the run dir)
    threads: int | None = None  # torch.set_num_threads; None leaves torch's default
    progress_bar: bool = True

    def __post_init__(self) -> None:
        for name in (
            "max_steps",
            "accumulate_grad_batches",
            "val_every",
            "log_every",
            "checkpoint_every",
            "num_nodes",
        ):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                raise ValueError(f"trainer.{name} = {value!r}: must be a positive integer")
        positive(self.keep_checkpoints, "trainer.keep_checkpoints", allow_zero=True)
        choose(self.precision, PRECISIONS, "trainer.precision")
        if self.strategy != "auto":  # the registry imports Lightning: only when it is asked about
            choose(self.strategy, lightning_strategies(), "trainer.strategy")
        if self.threads is not None:
            positive(self.threads, "trainer.threads")


@dataclass
class EvalSection:
    """The eval suite (evals/, `attnlab eval`) as part of validation: off unless `suite` is set. Runs
    at every `every`-th validation and at the final one; logs eval/<task>/len<L>/hops<h> and
    eval/mean to metrics.jsonl and result.json. Fields as `attnlab eval`'s flags; for a run on
    MQAR, the task's power_a / random_non_queries / separator are the mqar defaults."""

    suite: str | None = None  # multihop | ruler | copy | mqar | text
    tasks: list[str] | None = None  # None: the suite's tasks
    lengths: list[int] = field(default_factory=lambda: [256, 512, 1024])
    hops: list[int] = field(default_factory=lambda: [1, 2, 4])
    samples: int = 16  # per (task, length, hops) cell
    seed: int = 1234
    batch_size: int = 8
    options: dict = field(default_factory=dict)  # {task: {option: value}}
    every: int = 1  # validations between suite runs

    def __post_init__(self) -> None:
        positive(self.every, "eval.every")
        if self.suite is not None:
            try:
                self.spec()
            except ValueError as err:
                raise ValueError(f"eval: {err}") from None

    def spec(self, mqar_defaults: dict | None = None):
        """-> SuiteSpec; `mqar_defaults` (the training task's generator options) under `options`."""
        from ..evals.suite import SuiteSpec

        options = dict(self.options)
        if mqar_defaults:
            options["mqar"] = {**mqar_defaults, **options.get("mqar", {})}
        fields = {k: getattr(self, k) for k in ("suite", "lengths", "hops", "samples", "seed", "batch_size")}
        return SuiteSpec(**fields, tasks=self.tasks, options=options)


@dataclass
class TrainConfig:
    run_dir: str = "runs/train"
    seed: int = 0
    model: ModelSection = field(default_factory=ModelSection)
    data: DataSection = field(default_factory=DataSection)
    optim: OptimSection = field(default_factory=OptimSection)
    trainer: TrainerSection = field(default_factory=TrainerSection)
    eval: EvalSection = field(default_factory=EvalSection)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def lightning_strategies() -> tuple[str, ...]:
    from lightning.pytorch.strategies import StrategyRegistry

    return ("auto", *sorted(StrategyRegistry.available_strategies()))


# --- parsing: one path for YAML files, CLI overrides and sweep-generated dicts -------------------
def config_parser(prog: str = "attnlab train"):
    from jsonargparse import ActionConfigFile, ArgumentParser

    parser = ArgumentParser(prog=prog, exit_on_error=False, description="Train one attnlab model.")
    parser.add_argument("--config", action=ActionConfigFile, help="YAML run config (configs/train/*.yaml)")
    parser.add_argument("--resume", action="store_true", help="continue from <run_dir>/checkpoints/last.ckpt")
    parser.add_class_arguments(TrainConfig, nested_key=None, fail_untyped=False)
    return parser


def parse_args(argv: list[str]) -> tuple[TrainConfig, bool]:
    """CLI words -> (config, resume). Raises ValueError naming the field on any bad value."""
    from jsonargparse import ArgumentError

    parser = config_parser()
    argv = list(argv)
    for i, word in enumerate(argv[:-1]):
        if word == "--config":  # also accept paths relative to the installed attnlab/configs
            from .sweep import find_config

            argv[i + 1] = str(find_config(argv[i + 1]))
            check_yaml_file(Path(argv[i + 1]))
    try:
        ns = parser.parse_args(argv)
    except ArgumentError as err:
        raise ValueError(str(err)) from None
    resume = bool(ns.pop("resume"))
    ns.pop("config", None)
    return build_config(parser, ns), resume


def check_yaml_file(path: Path):
    """The file's YAML content; one that does not parse: one line naming the file, the problem and where."""
    import yaml

    try:
        return yaml.safe_load(path.read_text())
    except yaml.MarkedYAMLError as err:
        mark = err.problem_mark or err.context_mark
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise ValueError(
            f"{path}: not valid YAML ({err.problem or err.context}{where}); is it cut short?"
        ) from None
    except yaml.YAMLError as err:
        raise ValueError(f"{path}: not valid YAML ({err})") from None
    except (OSError, UnicodeDecodeError) as err:
        raise ValueError(f"{path}: cannot be read ({err})") from None


def config_from_dict(values: dict) -> TrainConfig:
    from jsonargparse import ArgumentError

    parser = config_parser()
    try:
        ns = parser.parse_object(values)
    except ArgumentError as err:
        raise ValueError(str(err)) from None
    ns.pop("resume", None)
    ns.pop("config", None)
    return build_config(parser, ns)


def build_config(parser, ns) -> TrainConfig:
    init = parser.instantiate(ns)
    fields = {f.name for f in dataclasses.fields(TrainConfig)}
    return TrainConfig(**{k: v for k, v in vars(init).items() if k in fields})


def load_config(path: str) -> TrainConfig:
    import yaml

    with open(path) as f:
        return config_from_dict(yaml.safe_load(f) or {})


def dump_config(cfg: TrainConfig) -> str:
    import yaml

    return yaml.safe_dump(cfg.to_dict(), sort_keys=False)
